//! CRC-32 (IEEE 802.3, reflected; zlib's `crc32`) of a key's Avro body: the partition hash
//! `bridge.produce.topics.partition_for` computes with `zlib.crc32` (librdkafka's `consistent`
//! partitioner). The producer core returns it with each change, so Python only takes it modulo
//! the topic's partition count.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// zlib's `crc32(data)`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn known_values() {
        // zlib.crc32(b"") == 0, zlib.crc32(b"123456789") == 0xCBF43926 (the check value)
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(&[0x02]), 0x3C0C_8EA1); // zlib.crc32(b"\x02")
    }
}
