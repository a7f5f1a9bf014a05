//! Random identifiers and secrets, all from OpenSSL's CSPRNG: operation IDs, etags, generation
//! IDs and symmetric keys. Nothing here needs to match Azure's formats byte for byte; clients
//! treat them as opaque.

use data_encoding::{BASE64, HEXLOWER};

/// `n` random bytes. OpenSSL's RNG only fails if it cannot seed, which is fatal anyway.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    openssl::rand::rand_bytes(&mut buf).expect("OpenSSL RNG failed");
    buf
}

/// A 32-byte key, base64 (IoT Hub symmetric keys, SAS policy keys).
pub fn symmetric_key() -> String {
    BASE64.encode(&random_bytes(32))
}

/// `4.<16 hex>.<uuid>`-shaped like DPS operation IDs.
pub fn operation_id() -> String {
    let r = random_bytes(24);
    let h = HEXLOWER.encode(&r);
    format!(
        "4.{}.{}-{}-{}-{}-{}",
        &h[..16],
        &h[16..24],
        &h[24..28],
        &h[28..32],
        &h[32..36],
        &h[36..48]
    )
}

/// An opaque etag (base64 of 8 random bytes, as IoT Hub's look).
pub fn etag() -> String {
    BASE64.encode(&random_bytes(8))
}

/// An 18-digit decimal generation ID, as IoT Hub assigns to devices and modules.
pub fn generation_id() -> String {
    let r = random_bytes(8);
    let n = u64::from_be_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
    format!("63{:016}", n % 10_000_000_000_000_000)
}

/// A tracking ID for error bodies.
pub fn tracking_id() -> String {
    HEXLOWER.encode(&random_bytes(16))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        assert_eq!(super::generation_id().len(), 18);
        assert!(super::operation_id().starts_with("4."));
        assert_eq!(
            data_encoding::BASE64
                .decode(super::symmetric_key().as_bytes())
                .unwrap()
                .len(),
            32
        );
    }
}
