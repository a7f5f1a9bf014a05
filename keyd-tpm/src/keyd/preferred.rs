//! `preferredAlgorithms` of `POST /keypair`, with upstream's parsing: `:`-separated
//! `ec-p256`, `rsa-2048`, `rsa-4096`, `*` (= ec-p256 then rsa-2048), unknown words ignored,
//! absent = `*`. Like upstream's PKCS#11 backend we take the first algorithm that can be made,
//! so `rsa-4096:*` gives EC P-256 on a TPM, where upstream's file backend would make RSA-4096.

use crate::tpm::KeyPairAlgorithm;

use super::error::KeydError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preferred {
    EcP256,
    Rsa2048,
    Rsa4096,
}

fn parse(value: Option<&str>) -> Vec<Preferred> {
    let Some(value) = value else {
        return vec![Preferred::EcP256, Preferred::Rsa2048];
    };
    let mut out = Vec::new();
    for word in value.split(':') {
        match word {
            "ec-p256" => out.push(Preferred::EcP256),
            "rsa-2048" => out.push(Preferred::Rsa2048),
            "rsa-4096" => out.push(Preferred::Rsa4096),
            "*" => out.extend([Preferred::EcP256, Preferred::Rsa2048]),
            _ => {}
        }
    }
    out
}

/// The algorithm to generate: the first preferred one that keys in this TPM can have.
pub fn choose(value: Option<&str>) -> Result<KeyPairAlgorithm, KeydError> {
    parse(value)
        .into_iter()
        .find_map(|p| match p {
            Preferred::EcP256 => Some(KeyPairAlgorithm::EcP256),
            Preferred::Rsa2048 => Some(KeyPairAlgorithm::Rsa2048),
            Preferred::Rsa4096 => None,
        })
        .ok_or_else(|| {
            KeydError::invalid(
                "preferredAlgorithms",
                format!(
                    "{:?} names no algorithm keyd-tpm can generate; use ec-p256, rsa-2048 or *",
                    value.unwrap_or_default()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parsing() {
        assert_eq!(parse(None), [Preferred::EcP256, Preferred::Rsa2048]);
        assert_eq!(
            parse(Some("rsa-2048:*")),
            [Preferred::Rsa2048, Preferred::EcP256, Preferred::Rsa2048]
        );
        assert_eq!(
            parse(Some("foo:rsa-4096:ec-p256")),
            [Preferred::Rsa4096, Preferred::EcP256]
        );
        assert_eq!(parse(Some("")), []);
    }

    #[test]
    fn first_algorithm_the_tpm_can_make() {
        assert_eq!(choose(None).unwrap(), KeyPairAlgorithm::EcP256);
        assert_eq!(
            choose(Some("rsa-2048:*")).unwrap(),
            KeyPairAlgorithm::Rsa2048
        );
        assert_eq!(
            choose(Some("rsa-4096:*")).unwrap(),
            KeyPairAlgorithm::EcP256
        );
        assert_eq!(
            choose(Some("ec-p384:ec-p256")).unwrap(),
            KeyPairAlgorithm::EcP256
        );
        for none in ["", "rsa-4096", "ed25519"] {
            let e = choose(Some(none)).unwrap_err();
            assert!(
                matches!(
                    e,
                    KeydError::InvalidParameter {
                        name: "preferredAlgorithms",
                        ..
                    }
                ),
                "{none}"
            );
        }
    }
}
