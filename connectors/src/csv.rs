//! CSV: the one implementation every connector reads and writes it with, on `csv-core`
//! (RFC 4180: `,` between fields, a field holding `,` `"` CR or LF in double quotes, a quote
//! inside doubled).
//!
//! Contract: what a [`Writer`] writes a [`Reader`] of the same dialect reads back field for
//! field, whatever bytes the fields hold. Two dialects:
//!
//! - [`Writer::new`] / [`Reader::new`], the file connectors': quotes only where needed; an
//!   absent field is written empty, and read back as an empty field.
//! - [`Writer::postgres`] / [`Reader::postgres`], PostgreSQL's `COPY … (FORMAT csv, NULL '\N')`
//!   ([`POSTGRES_COPY_OPTIONS`]): an absent field (SQL NULL) is an unquoted `\N`, and a value
//!   `\N` is quoted, so the two stay apart; an empty value is quoted too, so no record is an
//!   empty line, which a CSV reader skips (`COPY`'s default NULL, an unquoted empty field,
//!   would make a one-column NULL row one).
//!
//! Neither allocates per field: a writer appends to the caller's buffer, a reader reuses its
//! record's buffer.

/// The options of PostgreSQL's `COPY` matching [`Writer::postgres`] and [`Reader::postgres`].
pub const POSTGRES_COPY_OPTIONS: &str = r"(FORMAT csv, NULL '\N')";

const POSTGRES_NULL: &[u8] = br"\N";

/// Writes records; see the module documentation.
pub struct Writer {
    core: csv_core::Writer,
    /// How an absent field is written (empty when `None`).
    null: Option<&'static [u8]>,
}

impl Writer {
    /// The file connectors' dialect.
    pub fn new() -> Self {
        Self {
            core: csv_core::Writer::new(),
            null: None,
        }
    }

    /// PostgreSQL's `COPY` with [`POSTGRES_COPY_OPTIONS`].
    pub fn postgres() -> Self {
        Self {
            null: Some(POSTGRES_NULL),
            ..Self::new()
        }
    }

    /// Appends one field to `out`, after a `,` unless it is the record's `first`.
    pub fn field(&self, first: bool, value: Option<&[u8]>, out: &mut Vec<u8>) {
        if !first {
            out.push(b',');
        }
        match value {
            None => out.extend_from_slice(self.null.unwrap_or_default()),
            // In a dialect with a NULL marker: the marker itself and an empty value quoted.
            Some(v)
                if self.core.should_quote(v)
                    || self.null.is_some_and(|n| v == n || v.is_empty()) =>
            {
                out.push(b'"');
                let start = out.len();
                // At worst every byte is a quote, doubled.
                out.resize(start + 2 * v.len(), 0);
                let (_, _, written) = csv_core::quote(v, &mut out[start..], b'"', b'\\', true);
                out.truncate(start + written);
                out.push(b'"');
            }
            Some(v) => out.extend_from_slice(v),
        }
    }

    /// Appends one record to `out`, without a line terminator.
    pub fn record<'a>(
        &self,
        fields: impl IntoIterator<Item = Option<&'a [u8]>>,
        out: &mut Vec<u8>,
    ) {
        for (i, f) in fields.into_iter().enumerate() {
            self.field(i == 0, f, out);
        }
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// One record read: its fields, each absent (SQL NULL, in the PostgreSQL dialect) or bytes.
#[derive(Debug, Default)]
pub struct Record {
    /// The fields' bytes, one after the other (and room past them for the next).
    data: Vec<u8>,
    fields: Vec<Option<(usize, usize)>>,
}

impl Record {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Field `i`: `None` past the end, `Some(None)` when absent.
    pub fn get(&self, i: usize) -> Option<Option<&[u8]>> {
        let f = self.fields.get(i)?;
        Some(f.map(|(s, e)| &self.data[s..e]))
    }

    /// The fields as text (invalid UTF-8 replaced, an absent field empty).
    pub fn texts(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| {
                String::from_utf8_lossy(self.get(i).flatten().unwrap_or_default()).into_owned()
            })
            .collect()
    }
}

/// Reads records from a stream given in pieces of any size; see the module documentation.
pub struct Reader {
    core: csv_core::Reader,
    null: Option<&'static [u8]>,
    record: Record,
    /// Bytes of `record.data` holding fields; csv-core writes the next one after them.
    len: usize,
    /// Where the field being read starts in `record.data`.
    start: usize,
    /// Input bytes the field being read took so far: more than its bytes when it was quoted.
    raw: usize,
}

impl Reader {
    /// The file connectors' dialect.
    pub fn new() -> Self {
        Self {
            core: csv_core::ReaderBuilder::new()
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build(),
            null: None,
            record: Record::default(),
            len: 0,
            start: 0,
            raw: 0,
        }
    }

    /// PostgreSQL's `COPY` with [`POSTGRES_COPY_OPTIONS`].
    pub fn postgres() -> Self {
        Self {
            null: Some(POSTGRES_NULL),
            ..Self::new()
        }
    }

    /// Reads `input`, the next piece of the stream (empty: the stream ends, and the reader is
    /// ready for a new one), and calls `each` with every record it completes. A record split
    /// between pieces is completed by a later call. Stops at the first error of `each`.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        mut each: impl FnMut(&Record) -> Result<(), E>,
    ) -> Result<(), E> {
        use csv_core::ReadFieldResult;
        let end = input.is_empty();
        if self.at_record_start() {
            input = self.unquoted_records(input, &mut each)?;
        }
        loop {
            // An empty input is the end of the stream to csv-core: never pass one before it.
            if input.is_empty() && !end {
                return Ok(());
            }
            if self.len == self.record.data.len() {
                let room = (self.record.data.len() * 2).max(1024);
                self.record.data.resize(room, 0);
            }
            let (result, read, wrote) = self
                .core
                .read_field(input, &mut self.record.data[self.len..]);
            input = &input[read..];
            self.raw += read;
            self.len += wrote;
            match result {
                ReadFieldResult::InputEmpty if !end => return Ok(()),
                ReadFieldResult::InputEmpty | ReadFieldResult::OutputFull => {}
                ReadFieldResult::Field { record_end } => {
                    // Before the end of the stream, a `,` or a newline ended the field.
                    let raw = self.raw - usize::from(!end);
                    let (start, stop) = (self.start, self.len);
                    let value = &self.record.data[start..stop];
                    let absent = self.null == Some(value) && raw == value.len();
                    self.record.fields.push((!absent).then_some((start, stop)));
                    (self.start, self.raw) = (stop, 0);
                    if record_end {
                        let done = each(&self.record);
                        self.record.fields.clear();
                        (self.len, self.start) = (0, 0);
                        done?;
                    }
                }
                ReadFieldResult::End => {
                    self.core.reset();
                    return Ok(());
                }
            }
        }
    }

    /// Whether no part of a record has been read: csv-core is at the start of one.
    fn at_record_start(&self) -> bool {
        self.len == 0 && self.raw == 0 && self.record.fields.is_empty()
    }

    /// The complete records at the start of `input` before its first quote, split at `,` and
    /// newlines without csv-core (PostgreSQL sends `COPY` rows one per message, most of them
    /// unquoted; csv-core's state machine cost ~130 ns per 100-byte row): an unquoted field
    /// is its bytes, an empty line is no record, as csv-core reads them. Returns the rest,
    /// from the record holding the quote or the partial last one, for csv-core.
    fn unquoted_records<'i, E>(
        &mut self,
        mut input: &'i [u8],
        each: &mut impl FnMut(&Record) -> Result<(), E>,
    ) -> Result<&'i [u8], E> {
        let mut unquoted = memchr::memchr(b'"', input).unwrap_or(input.len());
        while let Some(newline) = memchr::memchr(b'\n', &input[..unquoted]) {
            unquoted -= newline + 1;
            let line = &input[..newline];
            input = &input[newline + 1..];
            if line.is_empty() {
                continue;
            }
            let record = &mut self.record;
            if record.data.len() < line.len() {
                record.data.resize(line.len(), 0);
            }
            record.data[..line.len()].copy_from_slice(line);
            let mut start = 0;
            for stop in memchr::memchr_iter(b',', line).chain([line.len()]) {
                let absent = self.null == Some(&line[start..stop]);
                record.fields.push((!absent).then_some((start, stop)));
                start = stop + 1;
            }
            let done = each(record);
            record.fields.clear();
            done?;
        }
        Ok(input)
    }

    /// The fields of one line (without its newline), as text; see [`Record::texts`]. An empty
    /// line is one empty field, as a one-column CSV writes an empty value.
    pub fn line(&mut self, line: &[u8]) -> Vec<String> {
        let mut fields = vec![String::new()];
        let mut take = |r: &Record| {
            fields = r.texts();
            Ok::<_, std::convert::Infallible>(())
        };
        let Ok(()) = self.feed(line, &mut take);
        let Ok(()) = self.feed(&[], &mut take);
        fields
    }
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record through a writer and back through a reader of its dialect, the stream cut
    /// at every byte.
    fn round_trip(
        writer: Writer,
        mut reader: impl FnMut() -> Reader,
        records: &[Vec<Option<&[u8]>>],
    ) {
        let mut text = Vec::new();
        for r in records {
            writer.record(r.iter().copied(), &mut text);
            text.push(b'\n');
        }
        for cut in 0..=text.len() {
            let mut reader = reader();
            let mut back: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            let mut take = |r: &Record| {
                back.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap().map(<[u8]>::to_vec))
                        .collect(),
                );
                Ok::<_, ()>(())
            };
            for piece in [&text[..cut], &text[cut..], &[]] {
                reader.feed(piece, &mut take).unwrap();
            }
            let want: Vec<Vec<Option<Vec<u8>>>> = records
                .iter()
                .map(|r| r.iter().map(|f| f.map(<[u8]>::to_vec)).collect())
                .collect();
            assert_eq!(
                back,
                want,
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn what_is_written_reads_back_field_for_field() {
        let fields: Vec<Option<&[u8]>> = vec![
            Some(b"1"),
            Some(b"a, b"),
            Some(b"say \"hi\""),
            Some(b""),
            Some(b"two\nlines\r"),
            Some(br"back\slash"),
        ];
        round_trip(
            Writer::new(),
            Reader::new,
            &[fields.clone(), vec![Some(b"x")]],
        );
        let mut with_nulls = fields;
        with_nulls.extend([None, Some(&br"\N"[..]), None]);
        round_trip(
            Writer::postgres(),
            Reader::postgres,
            &[with_nulls, vec![None], vec![Some(b"")]],
        );
    }

    #[test]
    fn unquoted_records_read_as_csv_core_reads_them() {
        // Whole, they take the split without csv-core; a byte at a time, mostly csv-core.
        let text = b"1,a,\\N\n\n2,,b\n\\N\nlast,\"q\"\n";
        let read = |pieces: &[&[u8]]| {
            let (mut reader, mut back) = (Reader::postgres(), Vec::new());
            let mut take = |r: &Record| {
                back.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap().map(<[u8]>::to_vec))
                        .collect::<Vec<_>>(),
                );
                Ok::<_, ()>(())
            };
            for piece in pieces.iter().chain([&&[][..]]) {
                reader.feed(piece, &mut take).unwrap();
            }
            back
        };
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        let (b, v) = (|s: &str| Some(s.as_bytes().to_vec()), None);
        let want = vec![
            vec![b("1"), b("a"), v.clone()],
            vec![b("2"), b(""), b("b")],
            vec![v.clone()],
            vec![b("last"), b("q")],
        ];
        assert_eq!(read(&[text]), want);
        assert_eq!(read(&bytes), want);
        // Unquoted records before a quoted one in the same piece, and after it.
        assert_eq!(read(&[&text[..18], &text[18..]]), want);
    }

    #[test]
    fn fields_are_quoted_only_where_needed() {
        let mut out = Vec::new();
        let fields: [Option<&[u8]>; 5] = [
            Some(b"1"),
            Some(b"a, b"),
            Some(b"say \"hi\""),
            None,
            Some(b"x"),
        ];
        Writer::new().record(fields, &mut out);
        assert_eq!(out, br#"1,"a, b","say ""hi""",,x"#);
        out.clear();
        Writer::postgres().record([None, Some(&br"\N"[..]), Some(b"")], &mut out);
        assert_eq!(out, br#"\N,"\N","""#);
        assert_eq!(
            Reader::new().line(br#"1,"a, b","say ""hi""",,x"#),
            ["1", "a, b", "say \"hi\"", "", "x"]
        );
        assert_eq!(Reader::new().line(b""), [""]);
    }
}
