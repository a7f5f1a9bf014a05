//! The Keys Service and TPM Service as the fuzz generators see them: every route with its JSON
//! body (mutated), ids, forged handles and mutated DPS blobs. Shared by the in-process and the
//! daemon suites.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};
use testkit::fuzz::gen::{b64, b64_string, body_bytes, json_value, mutate_json, odd_string, Api, Route};

pub const KEYD_VERSIONS: &[&str] = &["2020-09-01", "2021-05-01"];
pub const TPMD_VERSIONS: &[&str] = &["2020-09-01"];

/// Ids the fuzzer creates and destroys freely.
pub const VICTIM_IDS: &[&str] = &["v-key", "v-derive", "v-aead", "v-pair", "v-pair2"];
/// Keys made before the run whose handles the fuzzer never sees; they must still work after.
pub const WITNESS_KEY: &str = "fuzz-witness-key";
pub const WITNESS_PAIR: &str = "fuzz-witness-pair";
/// The DPS auth key every blob carries (so a blob that imports keeps the same key).
pub const AUTH_KEY: &[u8] = b"fuzz-auth-key-0123456789abcdef01";

/// What the suites know of the service under test.
pub struct Known {
    /// Handles of victim keys (symmetric, key pair, derived).
    pub handles: Vec<String>,
    /// A valid DPS blob for this TPM carrying [`AUTH_KEY`].
    pub blob: Vec<u8>,
}

/// How long key ids may be: within what every file system holds, or anything up to 70,000
/// characters (the long-id fix of issue 11 item 4).
#[derive(Clone, Copy)]
pub enum IdLength {
    Safe,
    Any,
}

impl IdLength {
    fn max(self) -> usize {
        match self {
            IdLength::Safe => 120,
            IdLength::Any => 70_000,
        }
    }
}

fn ids(length: IdLength) -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(VICTIM_IDS).prop_map(str::to_owned),
        3 => odd_string(length.max()),
    ]
    .boxed()
}

/// Ids for create-if-not-exists: victims, odd ones, and the witnesses (which must not change).
fn create_ids(length: IdLength) -> BoxedStrategy<String> {
    prop_oneof![
        8 => ids(length),
        1 => select(vec![WITNESS_KEY, WITNESS_PAIR]).prop_map(str::to_owned),
    ]
    .boxed()
}

/// Handles: genuine victim handles, and forged, truncated, spliced and made-up ones.
pub fn handles(valid: &[String], length: IdLength) -> BoxedStrategy<String> {
    let v = select(valid.to_vec());
    let forged_sr = (
        select(vec!["Key", "KeyPair"]),
        create_ids(length),
        vec(any::<u8>(), 32..=32),
    )
        .prop_map(|(kind, id, sig)| {
            let sr = json!({ "key_id": { kind: id }, "nonce": b64(&[7; 64]) }).to_string();
            format!("sr={}&sig={}", b64(sr.as_bytes()), b64(&sig))
        });
    let forged_derived = (v.clone(), vec(any::<u8>(), 0..16), vec(any::<u8>(), 32..=32)).prop_map(
        |(base, data, sig)| {
            let sr = json!({ "key_id": { "Derived": [base, data] }, "nonce": "x" }).to_string();
            format!("sr={}&sig={}", b64(sr.as_bytes()), b64(&sig))
        },
    );
    prop_oneof![
        4 => v.clone(),
        2 => (v.clone(), any::<Index>(), select(b"ABCxyz019+/=&%".to_vec())).prop_map(|(h, i, c)| {
            let mut b = h.into_bytes();
            let at = i.index(b.len());
            b[at] = c;
            String::from_utf8_lossy(&b).into_owned()
        }),
        1 => (v.clone(), any::<Index>()).prop_map(|(h, i)| h[..i.index(h.len())].to_owned()),
        1 => v.clone().prop_map(|h| h.split('&').next().unwrap_or_default().to_owned()),
        1 => (v.clone(), v.clone()).prop_map(|(a, b)| {
            let sr = a.split('&').next().unwrap_or_default();
            let sig = b.split('&').nth(1).unwrap_or_default();
            format!("{sr}&{sig}")
        }),
        1 => v.prop_map(|h| format!("{h}&sig={}", b64(&[0; 32]))),
        2 => forged_sr,
        1 => forged_derived,
        1 => (vec(any::<u8>(), 0..80), vec(any::<u8>(), 32..=32))
            .prop_map(|(sr, sig)| format!("sr={}&sig={}", b64(&sr), b64(&sig))),
        1 => odd_string(300),
    ]
    .boxed()
}

fn body(template: BoxedStrategy<Value>) -> BoxedStrategy<Option<Vec<u8>>> {
    body_bytes(mutate_json(template))
}

/// The Keys Service (keyd.sock): every route upstream has.
pub fn keyd_api(known: &Known, length: IdLength) -> Api {
    let h = handles(&known.handles, length);
    let usage = prop_oneof![
        6 => select(vec!["sign", "derive,sign", "encrypt", "derive", "derive,encrypt,sign", "sign,sign"]),
        1 => Just(""),
        1 => Just("verify"),
        1 => Just("Sign"),
    ];
    let key_bytes = prop_oneof![3 => Just(Value::Null), 1 => b64_string(80).prop_map(Value::String)];
    let create_key = (create_ids(length), key_bytes, usage)
        .prop_map(|(id, bytes, usage)| json!({ "keyId": id, "keyBytes": bytes, "usage": usage }))
        .boxed();
    // An import replaces the key of that id (upstream's semantics), so only a create without
    // bytes may name a witness (and must leave it as it is): checked after the mutations.
    let create_key = body_bytes(mutate_json(create_key).prop_map(spare_witnesses).boxed());
    let algorithms = prop_oneof![
        8 => select(vec!["ec-p256", "*", "ec-p256:rsa-2048", "foo:ec-p256"]).prop_map(|s| Value::String(s.into())),
        1 => Just(Value::Null),
        1 => select(vec!["", "rsa-4096", "ed25519", "::"]).prop_map(|s| Value::String(s.into())),
        // RSA generation takes the simulator seconds: rare, and only for ids that then exist.
        1 => Just(Value::String("rsa-2048".into())),
    ];
    let create_pair = (create_ids(length), algorithms)
        .prop_map(|(id, alg)| json!({ "keyId": id, "preferredAlgorithms": alg }))
        .boxed();
    let from = ids(length).prop_map(|id| json!({ "from": id })).boxed();
    let handle_only = h.clone().prop_map(|h| json!({ "keyHandle": h })).boxed();
    let derive = (h.clone(), b64_string(48))
        .prop_map(|(h, data)| json!({ "baseKeyHandle": h, "derivationData": data }))
        .boxed();
    let sign = (
        h.clone(),
        prop_oneof![Just("HMAC-SHA256"), Just("ECDSA"), Just("RSA-PSS"), Just("hmac-sha256")],
        b64_string(96),
    )
        .prop_map(|(h, alg, data)| {
            let field = if alg == "ECDSA" { "digest" } else { "message" };
            json!({ "keyHandle": h, "algorithm": alg, "parameters": { field: data } })
        })
        .boxed();
    let crypt = |field: &'static str| {
        (
            h.clone(),
            prop_oneof![
                4 => (b64_string(16), b64_string(16))
                    .prop_map(|(iv, aad)| json!({ "algorithm": "AEAD", "parameters": { "iv": iv, "aad": aad } })),
                1 => Just(json!({ "algorithm": "RSA-PKCS1" })),
                1 => Just(json!({ "algorithm": "RSA-NO-PADDING" })),
                1 => json_value().prop_map(|p| json!({ "algorithm": "AEAD", "parameters": p })),
            ],
            b64_string(80),
        )
            .prop_map(move |(h, mut mechanism, data)| {
                mechanism["keyHandle"] = Value::String(h);
                mechanism[field] = Value::String(data);
                mechanism
            })
            .boxed()
    };
    let parameter = prop_oneof![
        6 => select(vec!["algorithm", "ec-curve-oid", "ec-point", "rsa-modulus", "rsa-exponent"]).prop_map(str::to_owned),
        1 => odd_string(40),
    ]
    .boxed();
    Api {
        api_versions: KEYD_VERSIONS,
        ids: ids(length),
        routes: vec![
            Route::new("POST", "/key", create_key),
            Route::bodiless("GET", "/key/{}"),
            Route::new("POST", "/key/{}", body(from.clone())),
            Route::new("DELETE", "/key", body(handle_only.clone())),
            Route::new("POST", "/keypair", body(create_pair)),
            Route::bodiless("GET", "/keypair/{}"),
            Route::new("POST", "/keypair/{}", body(from)),
            Route::new("DELETE", "/keypair", body(handle_only.clone())),
            Route::new("POST", "/parameters/{}", body(handle_only.clone())).with_ids(parameter),
            Route::new("POST", "/derivedkey", body(derive)),
            Route::new("POST", "/derivedkey/export", body(handle_only)),
            Route::new("POST", "/sign", body(sign)),
            Route::new("POST", "/encrypt", body(crypt("plaintext"))),
            Route::new("POST", "/decrypt", body(crypt("ciphertext"))),
        ],
    }
}

/// A `POST /key` body that would import over a witness names a victim instead.
fn spare_witnesses(mut body: Value) -> Value {
    let imports = body.get("keyBytes").is_some_and(|b| !b.is_null());
    let names_witness = body
        .get("keyId")
        .and_then(Value::as_str)
        .is_some_and(|id| id == WITNESS_KEY || id == WITNESS_PAIR);
    if imports && names_witness {
        body["keyId"] = Value::String(VICTIM_IDS[0].to_owned());
    }
    body
}

/// Byte ranges of the five TPM2B fields of a well-formed blob: (size field, data, end).
fn fields(blob: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < 5 && at + 2 <= blob.len() {
        let size = usize::from(u16::from_be_bytes([blob[at], blob[at + 1]]));
        out.push((at, at + 2, (at + 2 + size).min(blob.len())));
        at += 2 + size;
    }
    out
}

/// A DPS blob mutated: bits flipped, cut short, sizes changed, fields swapped or replaced,
/// junk appended; rarely left intact (then it imports, carrying the same key). With
/// `reserved_bits`, field 5's objectAttributes get bits set directly too (issue 11 item 5);
/// without, those four bytes are left alone.
pub fn mutated_blob(blob: Vec<u8>, reserved_bits: bool) -> BoxedStrategy<Vec<u8>> {
    let f = fields(&blob);
    assert_eq!(f.len(), 5, "the reference blob has five fields");
    let attributes = f[4].1 + 4..f[4].1 + 8;
    let len = blob.len();
    let b = blob.clone();
    let flip = (0..len, 0u8..8)
        .prop_filter("objectAttributes untouched", move |(i, _)| {
            reserved_bits || !attributes.contains(i)
        })
        .prop_map(move |(i, bit)| {
            let mut v = b.clone();
            v[i] ^= 1 << bit;
            v
        });
    let b = blob.clone();
    let cut = (0..len).prop_map(move |n| b[..n].to_vec());
    let b = blob.clone();
    let f2 = f.clone();
    let size = (0..5usize, any::<u16>()).prop_map(move |(i, s)| {
        let mut v = b.clone();
        v[f2[i].0..f2[i].0 + 2].copy_from_slice(&s.to_be_bytes());
        v
    });
    let b = blob.clone();
    let junk = vec(any::<u8>(), 1..64).prop_map(move |j| {
        let mut v = b.clone();
        v.extend(j);
        v
    });
    let b = blob.clone();
    let f2 = f.clone();
    let swap = (0..5usize, 0..5usize).prop_map(move |(i, j)| {
        let mut parts: Vec<Vec<u8>> = f2.iter().map(|(s, _, e)| b[*s..*e].to_vec()).collect();
        parts.swap(i, j);
        parts.concat()
    });
    let b = blob.clone();
    let f2 = f.clone();
    let replace = (0..5usize, vec(any::<u8>(), 0..300)).prop_map(move |(i, data)| {
        let mut parts: Vec<Vec<u8>> = f2.iter().map(|(s, _, e)| b[*s..*e].to_vec()).collect();
        let mut field = (data.len() as u16).to_be_bytes().to_vec();
        field.extend(data);
        parts[i] = field;
        parts.concat()
    });
    let b = blob.clone();
    let attr_at = f[4].1 + 4;
    let reserved = (0u32..32).prop_map(move |bit| {
        let mut v = b.clone();
        let mut a = u32::from_be_bytes([v[attr_at], v[attr_at + 1], v[attr_at + 2], v[attr_at + 3]]);
        a ^= 1 << bit;
        v[attr_at..attr_at + 4].copy_from_slice(&a.to_be_bytes());
        v
    });
    let base = prop_oneof![
        1 => Just(blob),
        8 => flip,
        2 => cut,
        2 => size,
        1 => junk,
        1 => swap,
        2 => replace,
    ];
    if reserved_bits {
        prop_oneof![6 => base, 2 => reserved].boxed()
    } else {
        base.boxed()
    }
}

/// The TPM Service (tpmd.sock), with upstream's three routes and our two.
pub fn tpmd_api(known: &Known, reserved_bits: bool) -> Api {
    let blob = prop_oneof![
        8 => mutated_blob(known.blob.clone(), reserved_bits).prop_map(|b| b64(&b)),
        1 => b64_string(400),
    ];
    let import = blob.prop_map(|k| json!({ "key": k })).boxed();
    let sign = b64_string(200).prop_map(|d| json!({ "data": d })).boxed();
    Api {
        api_versions: TPMD_VERSIONS,
        ids: odd_string(40),
        routes: vec![
            Route::bodiless("GET", "/get_tpm_keys"),
            Route::new("POST", "/import_auth_key", body(import)),
            Route::new("POST", "/sign_with_auth_key", body(sign)),
            Route::bodiless("GET", "/tpm_info"),
            Route::new(
                "POST",
                "/restore_auth_key",
                prop_oneof![Just(None), body_bytes(json_value())].boxed(),
            ),
        ],
    }
}
