//! The Parquet sink: files with the declared schema, rotated by rows and by time, footers
//! written on rotation and on shutdown, read back with the parquet crate.

use super::*;
use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every row of a Parquet file as (id, name, score, ok, at).
fn read_back(path: &Path) -> Vec<(i64, Option<String>, f64, bool, i64)> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("id").unwrap().data_type(),
        &DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    let mut out = Vec::new();
    for b in reader.build().unwrap() {
        let b = b.unwrap();
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (id, name, score, ok, at) =
            (col("id"), col("name"), col("score"), col("ok"), col("at"));
        let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
        let name = name.as_any().downcast_ref::<StringArray>().unwrap();
        let score = score.as_any().downcast_ref::<Float64Array>().unwrap();
        let ok = ok.as_any().downcast_ref::<BooleanArray>().unwrap();
        let at = at
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.push((
                id.value(i),
                (!name.is_null(i)).then(|| name.value(i).to_string()),
                score.value(i),
                ok.value(i),
                at.value(i),
            ));
        }
    }
    out
}

#[test]
fn the_parquet_sink_writes_the_declared_schema_and_closes_files_on_rotation_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("parquet");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: SharedLogClient = Arc::new(Log::open(dir.path().join("data")).unwrap());
    let mut recs: Vec<String> = (0..2500)
        .map(|i| {
            let name = if i == 7 {
                "null".to_string()
            } else {
                format!("\"n{i}\"")
            };
            format!(
                r#"{{"id":{i},"name":{name},"score":{}.5,"ok":{},"at":{},"extra":1}}"#,
                i % 10,
                i % 2 == 0,
                1_700_000_000_000i64 + i
            )
        })
        .collect();
    recs.insert(1234, r#"{"id":"not a number"}"#.into());
    produce(&rt, &client, "events", &recs);
    let worker = rt.block_on(Worker::new(client.clone())).unwrap();
    let _g = rt.enter();
    worker.create(config("pq", serde_json::json!({
        "connector.class": "parquet-sink", "topics": "events", "directory": out.to_str().unwrap(),
        "schema": "id:int64,name:string,score:float64,ok:boolean,at:timestamp", "rotate.rows": "1000",
        "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "pq-dlq",
    }))).unwrap();
    wait_for("two closed files", || files(&out, ".parquet").len() == 2);
    wait_for("the open third file", || {
        files(&out, ".parquet.tmp").len() == 1
    });
    let closed = files(&out, ".parquet");
    assert!(
        closed[0]
            .to_string_lossy()
            .ends_with("events-0-00000000000000000000.parquet"),
        "{closed:?}"
    );
    assert_eq!(read_back(&closed[0]).len(), 1000);
    // Shutdown closes the open file with its footer.
    worker.delete("pq").unwrap();
    wait_for("the third file closed", || {
        files(&out, ".parquet").len() == 3 && files(&out, ".parquet.tmp").is_empty()
    });
    let rows: Vec<_> = files(&out, ".parquet")
        .iter()
        .flat_map(|p| read_back(p))
        .collect();
    assert_eq!(rows.len(), 2500, "every good record once");
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..2500).collect::<Vec<_>>()
    );
    assert_eq!(
        rows[3],
        (3, Some("n3".into()), 3.5, false, 1_700_000_000_003)
    );
    assert_eq!(rows[7].1, None, "null stays null");
    let dead = rt
        .block_on(runnel::rides::read_raw(&client, "pq-dlq"))
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        String::from_utf8_lossy(&dead[0].headers[0].value.clone().unwrap())
            .contains("field \"id\"")
    );

    // Time: an idle open file is closed once it is older than rotate.interval.ms.
    let slow = dir.path().join("slow");
    produce(&rt, &client, "slow", &recs[..10]);
    worker.create(config("pq-slow", serde_json::json!({
        "connector.class": "parquet-sink", "topics": "slow", "directory": slow.to_str().unwrap(),
        "schema": "id:int64,name:string,score:float64,ok:boolean,at:timestamp", "rotate.interval.ms": "300",
    }))).unwrap();
    wait_for("the file closed by time", || {
        files(&slow, ".parquet").len() == 1
    });
    assert_eq!(read_back(&files(&slow, ".parquet")[0]).len(), 10);
    let err = worker
        .create(config("bad", serde_json::json!({
            "connector.class": "parquet-sink", "topics": "x", "directory": "/tmp", "schema": "id:uuid",
        })))
        .unwrap_err()
        .to_string();
    assert!(err.contains("schema") && err.contains("int64"), "{err}");
    worker.delete("pq-slow").unwrap();
}

#[test]
fn ctrl_c_closes_the_open_parquet_file_with_its_footer() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("pq"));
    let mut f = std::fs::File::create(&input).unwrap();
    for i in 0..300 {
        writeln!(
            f,
            r#"{{"id":{i},"name":"n{i}","score":1.5,"ok":true,"at":{i}}}"#
        )
        .unwrap();
    }
    drop(f);
    let worker_file = dir.path().join("worker.toml");
    std::fs::write(
        &worker_file,
        format!(
            "[[connector]]\nname = \"in\"\n\"connector.class\" = \"file-source\"\nfile = \"{}\"\ntopic = \"ev\"\nformat = \"json\"\n\n\
             [[connector]]\nname = \"pq\"\n\"connector.class\" = \"parquet-sink\"\ntopics = \"ev\"\ndirectory = \"{}\"\n\
             schema = \"id:int64,name:string,score:float64,ok:boolean,at:timestamp\"\n",
            input.display(),
            out.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["connect", "--rest", "127.0.0.1:0"])
        .arg(&worker_file)
        .env("RUST_LOG", "runnel_connectors::runtime::sink_task=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The worker's log, read to its end (so that the child never blocks on a full pipe).
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Every record in the open file before the signal: the sink put the last one, and there
    // is no other.
    let mut put_all = false;
    wait_for("the sink to have put every record", || {
        put_all |= lines
            .try_iter()
            .any(|l| l.contains("sink pq: ev-0 put and flushed up to offset 300 (exclusive)"));
        put_all
    });
    assert_eq!(files(&out, ".parquet.tmp").len(), 1, "one open file");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    child.wait().unwrap();
    reader.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly: {:?}",
        started.elapsed()
    );
    assert!(files(&out, ".parquet.tmp").is_empty());
    let closed = files(&out, ".parquet");
    assert_eq!(closed.len(), 1);
    assert_eq!(read_back(&closed[0]).len(), 300);
}
