//! Fault injection: make chosen endpoints throttle (429 + Retry-After), fail (500/503), answer
//! slowly, or drop the connection, for the next N requests or with a seeded probability. Clients'
//! retry and backoff logic is otherwise untestable against a cloud that always works.
//!
//! A rule is written `ENDPOINT=KIND[,count=N][,prob=P][,seed=S][,retry_after=SECS][,delay_ms=MS]`,
//! the same on the command line (`--fault`) and in the admin API. ENDPOINT is matched segment by
//! segment as a prefix of the request's endpoint label, `*` matching any one segment (or, alone,
//! everything):
//!
//! | label | requests |
//! |---|---|
//! | `dps/register` | `PUT /{idScope}/registrations/{id}/register` |
//! | `dps/operations` | `GET /{idScope}/registrations/{id}/operations/{op}` |
//! | `dps/service` | the DPS service API (`/enrollments`, `/registrations`) |
//! | `hub/{hostname}/devices`, `…/modules`, `…/twins` | IoT Hub API of one hub |
//!
//! So `hub` hits every hub, `hub/127.0.0.1:4431` one hub, `hub/*/modules` module calls on all.
//! KIND is `429`, `500`, `503`, `slow` or `drop`. Without `count` a rule fires forever; without
//! `prob` it fires on every matching request. The first matching rule that fires wins.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    #[serde(rename = "429")]
    Throttle,
    #[serde(rename = "500")]
    ServerError,
    #[serde(rename = "503")]
    Unavailable,
    Slow,
    Drop,
}

/// What the server must do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Throttle {
        retry_after: u64,
    },
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    Delay(Duration),
    Drop,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultRule {
    pub id: u64,
    pub spec: String,
    pub endpoint: String,
    pub kind: FaultKind,
    /// Faults left to inject; `None` = unlimited.
    pub remaining: Option<u64>,
    pub probability: f64,
    pub seed: u64,
    pub retry_after: Option<u64>,
    pub delay_ms: u64,
    /// How many requests this rule has hit so far.
    pub fired: u64,
    #[serde(skip)]
    rng: SplitMix64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault spec {spec:?}: {reason} (expected ENDPOINT=KIND[,count=N][,prob=P][,seed=S][,retry_after=SECS][,delay_ms=MS], KIND one of 429, 500, 503, slow, drop)")]
pub struct FaultSpecError {
    pub spec: String,
    pub reason: String,
}

impl FaultRule {
    /// Parses a spec; `id` is assigned by [`Faults::add`].
    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let err = |reason: &str| FaultSpecError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (endpoint, rest) = spec
            .split_once('=')
            .ok_or_else(|| err("no '=' between endpoint and kind"))?;
        let endpoint = endpoint.trim().trim_matches('/').to_owned();
        if endpoint.is_empty() {
            return Err(err("empty endpoint (use * for all)"));
        }
        let mut parts = rest.split(',');
        let kind = match parts.next().map(str::trim) {
            Some("429") => FaultKind::Throttle,
            Some("500") => FaultKind::ServerError,
            Some("503") => FaultKind::Unavailable,
            Some("slow") => FaultKind::Slow,
            Some("drop") => FaultKind::Drop,
            _ => return Err(err("unknown kind")),
        };
        let mut rule = Self {
            id: 0,
            spec: spec.to_owned(),
            endpoint,
            kind,
            remaining: None,
            probability: 1.0,
            seed: 0,
            retry_after: None,
            delay_ms: 2000,
            fired: 0,
            rng: SplitMix64(0),
        };
        let mut seed = None;
        for part in parts {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(&format!("option {part:?} has no value")))?;
            let num = || {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| err(&format!("{k} must be a whole number")))
            };
            match k.trim() {
                "count" => rule.remaining = Some(num()?),
                "prob" => {
                    let p: f64 = v.trim().parse().map_err(|_| err("prob must be a number"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(err("prob must be between 0 and 1"));
                    }
                    rule.probability = p;
                }
                "seed" => seed = Some(num()?),
                "retry_after" => rule.retry_after = Some(num()?),
                "delay_ms" => rule.delay_ms = num()?,
                other => return Err(err(&format!("unknown option {other:?}"))),
            }
        }
        rule.seed = match seed {
            Some(s) => s,
            None => {
                let b = crate::ids::random_bytes(8);
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
        };
        rule.rng = SplitMix64(rule.seed);
        Ok(rule)
    }

    fn matches(&self, label: &str) -> bool {
        if self.endpoint == "*" {
            return true;
        }
        let mut want = self.endpoint.split('/');
        let mut have = label.split('/');
        loop {
            match (want.next(), have.next()) {
                (None, _) => return true,
                (Some(_), None) => return false,
                (Some(w), Some(h)) if w == "*" || w.eq_ignore_ascii_case(h) => continue,
                _ => return false,
            }
        }
    }

    /// Decides for one matching request; advances the RNG even when it does not fire, so a seed
    /// gives the same pattern over the same request sequence.
    fn fire(&mut self) -> Option<Action> {
        if self.remaining == Some(0) {
            return None;
        }
        if self.probability < 1.0 && self.rng.next_f64() >= self.probability {
            return None;
        }
        if let Some(n) = &mut self.remaining {
            *n -= 1;
        }
        self.fired += 1;
        Some(match self.kind {
            FaultKind::Throttle => Action::Throttle {
                retry_after: self.retry_after.unwrap_or(1),
            },
            FaultKind::ServerError => Action::Fail {
                status: 500,
                retry_after: self.retry_after,
            },
            FaultKind::Unavailable => Action::Fail {
                status: 503,
                retry_after: self.retry_after,
            },
            FaultKind::Slow => Action::Delay(Duration::from_millis(self.delay_ms)),
            FaultKind::Drop => Action::Drop,
        })
    }
}

/// SplitMix64: tiny, seedable, good enough to decide coin flips reproducibly.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The active rules. Decisions take a short lock and do no I/O.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<(u64, Vec<FaultRule>)>,
}

impl Faults {
    pub fn add(&self, mut rule: FaultRule) -> FaultRule {
        let mut guard = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 += 1;
        rule.id = guard.0;
        guard.1.push(rule.clone());
        rule
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut guard = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let before = guard.1.len();
        guard.1.retain(|r| r.id != id);
        guard.1.len() != before
    }

    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clear();
    }

    /// The action for a request to `label`, if a rule fires; the rule's spec comes along for
    /// the log line.
    pub fn decide(&self, label: &str) -> Option<(Action, String)> {
        let mut guard = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .1
            .iter_mut()
            .filter(|r| r.matches(label))
            .find_map(|r| r.fire().map(|a| (a, r.spec.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option() {
        let r = FaultRule::parse("dps/register=429,count=2,retry_after=5").unwrap();
        assert_eq!(
            (r.kind, r.remaining, r.retry_after),
            (FaultKind::Throttle, Some(2), Some(5))
        );
        let r = FaultRule::parse("hub=drop,prob=0.25,seed=9").unwrap();
        assert_eq!((r.kind, r.probability, r.seed), (FaultKind::Drop, 0.25, 9));
        let r = FaultRule::parse("*=slow,delay_ms=10").unwrap();
        assert_eq!((r.kind, r.delay_ms), (FaultKind::Slow, 10));
        for bad in [
            "dps",
            "dps=404",
            "dps=500,count=x",
            "dps=500,prob=2",
            "dps=500,colour=red",
            "=500",
        ] {
            assert!(FaultRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoint_matches_by_segment_prefix_with_wildcards() {
        let r = |e: &str| FaultRule::parse(&format!("{e}=500")).unwrap();
        assert!(r("hub").matches("hub/127.0.0.1:9/modules"));
        assert!(r("hub/*/modules").matches("hub/127.0.0.1:9/modules"));
        assert!(!r("hub/*/modules").matches("hub/127.0.0.1:9/devices"));
        assert!(!r("dps/reg").matches("dps/register"));
        assert!(r("*").matches("dps/service"));
    }

    #[test]
    fn count_limits_and_rules_run_out() {
        let faults = Faults::default();
        faults.add(FaultRule::parse("dps=503,count=2").unwrap());
        assert!(faults.decide("hub/x/devices").is_none());
        assert!(faults.decide("dps/register").is_some());
        assert!(faults.decide("dps/operations").is_some());
        assert!(faults.decide("dps/register").is_none());
    }

    #[test]
    fn seeded_probability_is_reproducible() {
        let pattern = || {
            let faults = Faults::default();
            faults.add(FaultRule::parse("*=500,prob=0.5,seed=42").unwrap());
            (0..64)
                .map(|_| faults.decide("dps/register").is_some())
                .collect::<Vec<_>>()
        };
        let a = pattern();
        assert_eq!(a, pattern());
        let hits = a.iter().filter(|h| **h).count();
        assert!((16..=48).contains(&hits), "{hits} of 64");
    }
}
