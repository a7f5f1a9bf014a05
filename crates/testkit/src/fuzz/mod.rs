//! Property and fuzz testing on stable Rust, shared by every suite: case budgets, a seeded
//! proptest runner that counts what it saw, and one report line per target.
//!
//! Budgets: each suite names the cases a CI run makes (a few seconds); `AZIOT_FUZZ_SCALE`
//! multiplies them (`scripts/fuzz-long.sh` sets it). `AZIOT_FUZZ_SEED` (64 hex digits) replays a
//! run; otherwise the seed is random and printed with any failure.
//!
//! Every target ends with a line
//! `FUZZ target=.. cases=.. crashes=.. hangs=.. server_errors=.. no_message=.. keys_lost=.. unanswered=.. seconds=..`
//! on stderr and, when `AZIOT_FUZZ_REPORT` names a file, appended to it.

pub mod gen;
pub mod http;
pub mod toml_gen;

use std::fmt::Debug;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// A case taking longer than this counts as a hang. Parsers answer in microseconds; a route on
/// swtpm may take seconds when the machine is loaded and the TPM owner reopens the simulator
/// (a long run once saw one `restore_auth_key` take 10 s that way; replayed, it took milliseconds).
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

/// The cases of a target: `ci` times `AZIOT_FUZZ_SCALE` (default 1), at least 1.
pub fn cases(ci: u32) -> u32 {
    let scale = std::env::var("AZIOT_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    ((f64::from(ci) * scale).round() as u32).max(1)
}

/// The run's seed: `AZIOT_FUZZ_SEED` or fresh randomness.
pub fn seed() -> [u8; 32] {
    if let Ok(hex) = std::env::var("AZIOT_FUZZ_SEED") {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        if let Ok(seed) = <[u8; 32]>::try_from(bytes) {
            return seed;
        }
        panic!("AZIOT_FUZZ_SEED must be 64 hex digits");
    }
    let mut seed = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut seed);
    }
    seed
}

fn hex(seed: &[u8; 32]) -> String {
    seed.iter().map(|b| format!("{b:02x}")).collect()
}

fn runner(cases: u32, seed: &[u8; 32]) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 1024,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, seed))
}

/// Runs `test` on `cases(ci_cases)` values of `strategy`, shrinking the first failure. A panic
/// in `test` is a crash, a case slower than [`HANG_LIMIT`] a hang; either fails the target, as
/// does a `prop_assert!`. Reports the target's line either way.
pub fn check<S>(
    target: &str,
    ci_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    check_then(target, ci_cases, strategy, test, |_| {});
}

/// [`check`], then `after` (e.g. counting keys lost) before the target's line is written.
pub fn check_then<S>(
    target: &str,
    ci_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    after: impl FnOnce(&mut Tally),
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases(ci_cases);
    let seed = seed();
    let mut tally = Tally::new(target);
    let panics = AtomicU64::new(0);
    let hangs = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let result = runner(cases, &seed).run(&strategy, |value| {
        calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| test(value)));
        if started.elapsed() > HANG_LIMIT {
            hangs.fetch_add(1, Ordering::Relaxed);
            return Err(TestCaseError::fail(format!(
                "case took {:?} (limit {HANG_LIMIT:?})",
                started.elapsed()
            )));
        }
        match outcome {
            Ok(result) => result,
            Err(panic) => {
                panics.fetch_add(1, Ordering::Relaxed);
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".into());
                Err(TestCaseError::fail(format!("panicked: {what}")))
            }
        }
    });
    tally.cases = u64::from(cases).min(calls.load(Ordering::Relaxed));
    tally.crashes = u64::from(panics.load(Ordering::Relaxed) > 0);
    tally.hangs = u64::from(hangs.load(Ordering::Relaxed) > 0);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            if tally.crashes == 0 && tally.hangs == 0 {
                tally.other = 1;
            }
            tally.example(format!("{reason}\n  minimal input: {value:#?}"));
            tally.seed = Some(seed);
        }
        Err(TestError::Abort(reason)) => panic!("{target}: proptest aborted: {reason}"),
    }
    after(&mut tally);
    tally.finish();
}

/// Values of `strategy` one at a time, for suites that drive a daemon and count outcomes
/// themselves rather than stopping at the first failure.
pub struct Generator<S: Strategy> {
    strategy: S,
    runner: TestRunner,
    pub seed: [u8; 32],
}

impl<S: Strategy> Generator<S> {
    pub fn new(strategy: S) -> Self {
        let seed = seed();
        Generator {
            strategy,
            runner: runner(1, &seed),
            seed,
        }
    }

    pub fn next_value(&mut self) -> S::Value {
        self.strategy
            .new_tree(&mut self.runner)
            .unwrap_or_else(|e| panic!("strategy rejected every value: {e}"))
            .current()
    }
}

/// What a target counted. Any crash, hang, 5xx, missing message, lost key or other violation
/// fails the target after its report line is written, with up to a few example inputs.
#[derive(Debug)]
pub struct Tally {
    pub target: String,
    pub cases: u64,
    pub crashes: u64,
    pub hangs: u64,
    /// 5xx answers to what the caller got wrong.
    pub server_errors: u64,
    /// Error answers without a `{"message": "..."}` JSON body.
    pub no_message: u64,
    pub keys_lost: u64,
    /// Requests sent incomplete on purpose that got no answer before the client gave up (not a
    /// violation: the server is waiting for the rest).
    pub unanswered: u64,
    /// Other broken properties.
    pub other: u64,
    /// How many answers had each status (daemon suites), to show how deep the cases went.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    started: Instant,
    examples: Vec<String>,
    seed: Option<[u8; 32]>,
}

/// What is wrong with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A 5xx.
    ServerError,
    /// An error status without a non-empty `{"message": "..."}` JSON body.
    NoMessage,
}

/// The properties every answer must have: no 5xx, and an error says why in a `{"message"}`
/// body.
pub fn judge(status: u16, body: &[u8]) -> Result<(), Problem> {
    if status >= 500 {
        return Err(Problem::ServerError);
    }
    if status >= 400 {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
        if message.is_none_or(|m| m.is_empty()) {
            return Err(Problem::NoMessage);
        }
    }
    Ok(())
}

impl Tally {
    /// Counts a [`judge`] failure, keeping `what` as an example.
    pub fn problem(&mut self, problem: Problem, what: String) {
        match problem {
            Problem::ServerError => self.server_errors += 1,
            Problem::NoMessage => self.no_message += 1,
        }
        self.example(what);
    }
}

impl Tally {
    /// Counts what one raw exchange of `case` says about the server: an answer is judged (a
    /// 5xx that `tolerated` accepts, e.g. a 503 naming a dependency that is down, is not a
    /// violation); a complete request closed without an answer or left unanswered is a
    /// violation, an incomplete one merely unanswered; a refused connection is a crash.
    pub fn assess(
        &mut self,
        case: &gen::Case,
        outcome: std::io::Result<http::Outcome>,
        tolerated: impl Fn(&http::RawResponse) -> bool,
    ) {
        use http::Outcome;
        let request = || format!("\n  request [{}]: {}", case.what, case.preview());
        match outcome {
            Ok(Outcome::Answered(r)) => {
                self.status(r.status);
                match judge(r.status, &r.body) {
                    Err(Problem::ServerError) if tolerated(&r) => {}
                    Err(problem) => self.problem(
                        problem,
                        format!("{} {}: {}{}", r.status, r.head.lines().next().unwrap_or_default(), r.body_text(), request()),
                    ),
                    Ok(()) => {}
                }
            }
            Ok(Outcome::Closed { partial }) if case.complete => {
                self.other += 1;
                self.example(format!(
                    "closed without an answer (got {:?}){}",
                    String::from_utf8_lossy(&partial),
                    request()
                ));
            }
            Ok(Outcome::Silent { .. }) if case.complete => {
                self.hangs += 1;
                self.example(format!("no answer in time{}", request()));
            }
            Ok(_) => self.unanswered += 1,
            Err(e) => {
                self.crashes += 1;
                self.example(format!("cannot connect: {e}{}", request()));
            }
        }
    }

    /// Counts the panics a daemon's log shows (a panicking request task is a crash even when
    /// the process lives on).
    pub fn count_panics(&mut self, daemon: &str, log: &str) {
        let panics = log.matches("panicked").count() as u64;
        if panics > 0 {
            self.crashes += panics;
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).take(5).collect();
            self.example(format!("{daemon} logged {panics} panic(s):\n{}", lines.join("\n")));
        }
    }
}

/// Examples kept per target for the failure message.
const EXAMPLES: usize = 8;

impl Tally {
    pub fn new(target: &str) -> Self {
        Tally {
            target: target.to_owned(),
            cases: 0,
            crashes: 0,
            hangs: 0,
            server_errors: 0,
            no_message: 0,
            keys_lost: 0,
            unanswered: 0,
            other: 0,
            statuses: std::collections::BTreeMap::new(),
            started: Instant::now(),
            examples: Vec::new(),
            seed: None,
        }
    }

    /// Keeps `what` as an example of a violation (the first few only).
    pub fn example(&mut self, what: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }

    pub fn with_seed(&mut self, seed: [u8; 32]) {
        self.seed = Some(seed);
    }

    pub fn violations(&self) -> u64 {
        self.crashes + self.hangs + self.server_errors + self.no_message + self.keys_lost + self.other
    }

    /// Counts an answer's status.
    pub fn status(&mut self, status: u16) {
        *self.statuses.entry(status).or_default() += 1;
    }

    pub fn line(&self) -> String {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        let statuses = if statuses.is_empty() {
            String::new()
        } else {
            format!(" statuses={}", statuses.join(","))
        };
        format!(
            "FUZZ target={} cases={} crashes={} hangs={} server_errors={} no_message={} keys_lost={} unanswered={} other={} seconds={:.1}{statuses}",
            self.target,
            self.cases,
            self.crashes,
            self.hangs,
            self.server_errors,
            self.no_message,
            self.keys_lost,
            self.unanswered,
            self.other,
            self.started.elapsed().as_secs_f64(),
        )
    }

    /// Writes the report line; panics with the examples if anything was violated.
    pub fn finish(self) {
        let line = self.line();
        eprintln!("{line}");
        if let Some(path) = std::env::var_os("AZIOT_FUZZ_REPORT") {
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}");
            }
        }
        if self.violations() > 0 {
            let seed = self.seed.map(|s| format!("\nreplay with AZIOT_FUZZ_SEED={}", hex(&s)));
            panic!(
                "{line}\n{}{}",
                self.examples.join("\n---\n"),
                seed.unwrap_or_default()
            );
        }
    }
}
