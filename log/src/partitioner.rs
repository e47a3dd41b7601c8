//! Kafka's default partitioner for keyed records.
//!
//! Contract: [`partition_for_key`] picks the same partition for a key as the
//! Java client's default partitioner does, so Runnel and Kafka producers that
//! share a topic route each key to the same partition.
//!
//! Invariants:
//! - [`murmur2`] is bit-exact with `org.apache.kafka.common.utils.Utils.murmur2`
//!   (seed `0x9747b28c`, `m = 0x5bd1e995`, `r = 24`, Java's fall-through
//!   `switch` for the 1-3 trailing bytes, 32-bit wrapping arithmetic and
//!   logical `>>>` shifts), returning the same signed `int`.
//! - [`partition_for_key`] is `toPositive(murmur2(key)) % num_partitions` with
//!   `toPositive(n) = n & 0x7fffffff`, so its result is always
//!   `< num_partitions`.

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// Kafka's murmur2 hash of `data`, bit-exact with the Java client.
///
/// Java arrays hold at most `i32::MAX` bytes, so inputs longer than that have
/// no Java counterpart; their length is mixed in truncated to 32 bits.
pub fn murmur2(data: &[u8]) -> i32 {
    // Java mixes the length in as an int; truncation matches it for every
    // length Java can represent.
    let mut h = SEED ^ data.len() as u32;
    let (blocks, tail) = data.as_chunks::<4>();
    for block in blocks {
        h = h.wrapping_mul(M) ^ mix_block(*block);
    }
    if !tail.is_empty() {
        h = mix_tail(h, tail);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    // Java returns the same 32 bits read as a signed int.
    h.cast_signed()
}

/// Scrambles one little-endian 4-byte block (`k` in Java).
fn mix_block(block: [u8; 4]) -> u32 {
    let mut k = u32::from_le_bytes(block);
    k = k.wrapping_mul(M);
    k ^= k >> R;
    k.wrapping_mul(M)
}

/// Java's fall-through `switch (length % 4)`: every trailing byte is xored in
/// at its little-endian position, then a single multiply follows.
fn mix_tail(h: u32, tail: &[u8]) -> u32 {
    let folded = tail
        .iter()
        .enumerate()
        .fold(h, |acc, (i, &b)| acc ^ (u32::from(b) << (8 * i)));
    folded.wrapping_mul(M)
}

/// Kafka's `Utils.toPositive`: clears the sign bit rather than taking `abs`,
/// so `i32::MIN` maps to 0 instead of overflowing.
fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff).cast_unsigned()
}

/// The partition Kafka's default partitioner picks for a record with `key`
/// (keyless records are spread by the producer instead, not hashed).
///
/// # Panics
///
/// If `num_partitions` is 0: a topic always has at least one partition, so
/// that is a caller bug, not a routing decision.
pub fn partition_for_key(key: &[u8], num_partitions: u32) -> u32 {
    assert!(
        num_partitions > 0,
        "partition_for_key: a topic needs at least one partition"
    );
    to_positive(murmur2(key)) % num_partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        // The exact cases of Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn murmur2_covers_every_tail_length_and_high_bytes() {
        // Kafka's vectors never end in a 1-byte tail nor contain bytes above
        // 0x7f, so these pin values from a literal port of the Java code
        // (int32 wrapping, `>>>`, `& 0xff`) that reproduces the vectors above.
        let cases: [(&[u8], i32); 5] = [
            (b"", 275_646_681),
            (b"a", -1_563_381_124),
            (b"abcde", 461_995_741),
            (&[0xff], -311_467_685),
            (&[0x80, 0x81, 0x82, 0x83, 0xfe], 152_038_955),
        ];
        for (data, expected) in cases {
            assert_eq!(murmur2(data), expected, "murmur2({data:?})");
        }
    }

    #[test]
    fn partition_for_key_known_cases() {
        // toPositive(-790332482) = 1357151166; toPositive(479470107) is itself.
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        assert_eq!(partition_for_key(b"foobar", 3), 1_357_151_166 % 3);
        assert_eq!(partition_for_key(b"foobar", 10), 6);
        assert_eq!(partition_for_key(b"abc", 10), 7);
        assert_eq!(partition_for_key(b"abc", 16), 479_470_107 % 16);
        // toPositive(-973932308) = 1173551340.
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        assert_eq!(partition_for_key(b"hello", 10), 9);
        assert_eq!(partition_for_key(b"a", 10), 4);
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(42), 42);
    }

    #[test]
    #[should_panic(expected = "at least one partition")]
    fn zero_partitions_is_rejected() {
        partition_for_key(b"k", 0);
    }

    proptest! {
        #[test]
        fn partition_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1u32..10_000) {
            prop_assert!(partition_for_key(&key, n) < n);
        }
    }
}
