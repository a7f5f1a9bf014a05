//! Generators of hostile requests: whole HTTP/1.1 requests as bytes (request lines, headers,
//! framing, bodies, api-versions, percent-encoded paths) and JSON bodies mutated away from the
//! shape a route expects. A suite describes its API as [`Route`]s; [`case`] does the rest.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

/// One route of an API as the generator knows it.
pub struct Route {
    pub method: &'static str,
    /// `/key/{}`: each `{}` is filled with one of the API's ids.
    pub path: &'static str,
    /// Query parameters the route wants besides `api-version` (e.g. `type=aziot`).
    pub query: &'static [(&'static str, &'static str)],
    /// Bodies: usually [`body_bytes`] of the route's JSON, mutated.
    pub body: BoxedStrategy<Option<Vec<u8>>>,
    /// Ids for this route's placeholders, if not the API's.
    pub ids: Option<BoxedStrategy<String>>,
}

impl Route {
    pub fn new(
        method: &'static str,
        path: &'static str,
        body: BoxedStrategy<Option<Vec<u8>>>,
    ) -> Self {
        Route {
            method,
            path,
            query: &[],
            body,
            ids: None,
        }
    }

    /// A route without a body (GET): mostly none, sometimes a stray one.
    pub fn bodiless(method: &'static str, path: &'static str) -> Self {
        Self::new(
            method,
            path,
            prop_oneof![8 => Just(None), 1 => body_bytes(json_value())].boxed(),
        )
    }

    pub fn with_query(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }

    pub fn with_ids(mut self, ids: BoxedStrategy<String>) -> Self {
        self.ids = Some(ids);
        self
    }
}

/// An API: its versions, routes, and the ids that fill path placeholders.
pub struct Api {
    pub api_versions: &'static [&'static str],
    pub routes: Vec<Route>,
    pub ids: BoxedStrategy<String>,
}

/// Which kinds of damage to do besides the JSON and the URL.
#[derive(Clone, Copy, Debug, Default)]
pub struct Knobs {
    /// Break HTTP syntax: request lines, header syntax, framing, flipped bytes in the head.
    pub malformed_http: bool,
}

/// One request to send.
#[derive(Clone)]
pub struct Case {
    pub bytes: Vec<u8>,
    /// The server has everything it needs to answer (the framing is intact); if false it may
    /// rightly wait for more.
    pub complete: bool,
    /// The kinds of damage done, for reports.
    pub what: String,
}

impl Case {
    /// The request, escaped and cut to a readable length.
    pub fn preview(&self) -> String {
        preview(&self.bytes)
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] complete={} {}", self.what, self.complete, self.preview())
    }
}

/// `bytes` as escaped text, at most ~600 characters.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let text: String = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)])
        .escape_debug()
        .collect();
    if bytes.len() > MAX {
        format!("{text}... ({} bytes)", bytes.len())
    } else {
        text
    }
}

/// Requests against `api` as bytes: mostly one of its routes with damage, sometimes a path it
/// does not have.
pub fn case(api: &Api, knobs: Knobs) -> BoxedStrategy<Case> {
    spec(api, knobs).prop_map(assemble).boxed()
}

/// `spec` as the bytes a client sends.
pub fn write(spec: Spec) -> Case {
    assemble(spec)
}

/// The same requests before they are written out, for suites that call a service in-process.
pub fn spec(api: &Api, knobs: Knobs) -> BoxedStrategy<Spec> {
    let mut routes: Vec<(u32, BoxedStrategy<Spec>)> = api
        .routes
        .iter()
        .map(|route| (10, route_spec(api, route, knobs)))
        .collect();
    let unknown = Route::new(
        "GET",
        "/{}",
        prop_oneof![Just(None), body_bytes(json_value())].boxed(),
    );
    routes.push((4, route_spec(api, &unknown, knobs)));
    proptest::strategy::Union::new_weighted(routes).boxed()
}

#[derive(Clone, Debug)]
enum Framing {
    /// Exact `Content-Length` (omitted for no body).
    Length,
    /// Valid chunked encoding: chunk sizes, an extension, a trailer.
    Chunked { sizes: Vec<usize>, extension: bool, trailer: bool },
    /// No framing header: any body bytes are a second (garbage) request.
    Unframed,
    /// `Content-Length` short by this much: the rest is a second request.
    Short(usize),
    /// `Content-Length` long by this much: the server waits for bytes that never come.
    Long(usize),
    // Malformed:
    LengthText(String),
    TwoLengths,
    LengthAndChunked,
    BadChunkSize,
    ChunkedNoEnd,
    ChunkedTruncated,
}

impl Framing {
    fn complete(&self) -> bool {
        !matches!(self, Framing::Long(_) | Framing::ChunkedNoEnd | Framing::ChunkedTruncated)
    }
}

fn framing(knobs: Knobs) -> BoxedStrategy<Framing> {
    let chunked = (vec(1usize..64, 0..6), any::<bool>(), any::<bool>()).prop_map(
        |(sizes, extension, trailer)| Framing::Chunked {
            sizes,
            extension,
            trailer,
        },
    );
    let sound = prop_oneof![
        14 => Just(Framing::Length),
        4 => chunked,
        1 => Just(Framing::Unframed),
        1 => (1usize..8).prop_map(Framing::Short),
    ];
    if !knobs.malformed_http {
        return sound.boxed();
    }
    prop_oneof![
        16 => sound,
        1 => (1usize..8).prop_map(Framing::Long),
        1 => select(vec!["abc", "-1", "+5", "1 2", "0x10", "99999999999999999999999", ""])
            .prop_map(|s| Framing::LengthText(s.to_owned())),
        1 => Just(Framing::TwoLengths),
        1 => Just(Framing::LengthAndChunked),
        1 => Just(Framing::BadChunkSize),
        1 => Just(Framing::ChunkedNoEnd),
        1 => Just(Framing::ChunkedTruncated),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum Line {
    Normal,
    Http10,
    Absolute,
    LeadingEmptyLine,
    // Malformed:
    DoubleSpace,
    NoVersion,
    Version(&'static str),
    Trailing,
    LowerMethod,
    Asterisk,
    NoSlash,
    RawSpaceInTarget,
    RawUnicodeInTarget,
}

fn line(knobs: Knobs) -> BoxedStrategy<Line> {
    let sound = prop_oneof![
        20 => Just(Line::Normal),
        1 => Just(Line::Http10),
        1 => Just(Line::Absolute),
        1 => Just(Line::LeadingEmptyLine),
        1 => Just(Line::LowerMethod),
    ];
    if !knobs.malformed_http {
        return sound.boxed();
    }
    prop_oneof![
        14 => sound,
        1 => Just(Line::DoubleSpace),
        1 => Just(Line::NoVersion),
        1 => select(vec!["HTTP/2.0", "HTTP/1.2", "HTTP/9.9", "HTTP/1", "http/1.1", "HTTP/1.1.1", "FOO"])
            .prop_map(Line::Version),
        1 => Just(Line::Trailing),
        1 => Just(Line::Asterisk),
        1 => Just(Line::NoSlash),
        1 => Just(Line::RawSpaceInTarget),
        1 => Just(Line::RawUnicodeInTarget),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum BadHeader {
    None,
    NoColon,
    SpaceInName,
    ObsFold,
    NulInValue,
    CrInValue,
    Many(usize),
    Huge(usize),
    EmptyName,
}

fn bad_header(knobs: Knobs) -> BoxedStrategy<BadHeader> {
    if !knobs.malformed_http {
        return Just(BadHeader::None).boxed();
    }
    prop_oneof![
        20 => Just(BadHeader::None),
        1 => Just(BadHeader::NoColon),
        1 => Just(BadHeader::SpaceInName),
        1 => Just(BadHeader::ObsFold),
        1 => Just(BadHeader::NulInValue),
        1 => Just(BadHeader::CrInValue),
        1 => (90usize..140).prop_map(BadHeader::Many),
        1 => prop_oneof![Just(20_000usize), Just(120_000), Just(500_000)].prop_map(BadHeader::Huge),
        1 => Just(BadHeader::EmptyName),
    ]
    .boxed()
}

/// Byte flips in the head: (position fraction, new byte, insert or replace).
type Flips = Vec<(f64, u8, bool)>;

fn flips(knobs: Knobs) -> BoxedStrategy<Flips> {
    if !knobs.malformed_http {
        return Just(Vec::new()).boxed();
    }
    prop_oneof![
        12 => Just(Vec::new()),
        1 => vec((0.0f64..1.0, any::<u8>(), any::<bool>()), 1..4),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct Headers {
    host: bool,
    content_type: Option<&'static str>,
    connection: Option<&'static str>,
    expect: bool,
    extra: Vec<(String, String)>,
}

fn headers() -> BoxedStrategy<Headers> {
    let content_type = prop_oneof![
        12 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(Some("APPLICATION/JSON")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("")),
        1 => Just(Some(";;;")),
        2 => Just(None),
    ];
    let connection = prop_oneof![Just(Some("close")), Just(Some("keep-alive")), Just(None)];
    let extra = vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}"), 0..3);
    (prop::bool::weighted(0.95), content_type, connection, prop::bool::weighted(0.04), extra)
        .prop_map(|(host, content_type, connection, expect, extra)| Headers {
            host,
            content_type,
            connection,
            expect,
            extra,
        })
        .boxed()
}

/// How an id goes into a path segment.
#[derive(Clone, Debug)]
enum IdForm {
    /// Percent-encoded where needed: always a valid URI.
    Encoded,
    /// Every byte as `%XX`.
    AllEncoded,
    /// Arbitrary bytes as `%XX`, often not UTF-8.
    RawBytes(Vec<u8>),
    /// As is (may break the URI syntax: only with `malformed_http`).
    Raw,
}

fn id_form(knobs: Knobs) -> BoxedStrategy<IdForm> {
    let sound = prop_oneof![
        12 => Just(IdForm::Encoded),
        2 => Just(IdForm::AllEncoded),
        2 => prop_oneof![
            vec(any::<u8>(), 0..24),
            select(vec![vec![0xFF], vec![0xFE], vec![0xC0], vec![0xEF, 0xBF, 0xBD], vec![0xC0, 0xAF], vec![0], vec![b'/']]),
        ]
        .prop_map(IdForm::RawBytes),
    ];
    if knobs.malformed_http {
        prop_oneof![10 => sound, 1 => Just(IdForm::Raw)].boxed()
    } else {
        sound.boxed()
    }
}

/// What is done to a path beyond its ids.
#[derive(Clone, Debug)]
enum PathDamage {
    None,
    TrailingSlash,
    DoubleSlash,
    ExtraSegment(String),
    DotSegments,
    UpperCase,
    EncodedLetter,
}

fn path_damage() -> BoxedStrategy<PathDamage> {
    prop_oneof![
        24 => Just(PathDamage::None),
        1 => Just(PathDamage::TrailingSlash),
        1 => Just(PathDamage::DoubleSlash),
        1 => "[a-z0-9%]{0,8}".prop_map(PathDamage::ExtraSegment),
        1 => Just(PathDamage::DotSegments),
        1 => Just(PathDamage::UpperCase),
        1 => Just(PathDamage::EncodedLetter),
    ]
    .boxed()
}

/// `api-version` as sent.
#[derive(Clone, Debug)]
enum Version {
    Valid(&'static str),
    Missing,
    Value(String),
    Encoded(&'static str),
    Twice(String, &'static str),
    WrongCaseName(&'static str),
}

fn version(versions: &'static [&'static str]) -> BoxedStrategy<Version> {
    let valid = select(versions.to_vec());
    prop_oneof![
        24 => valid.clone().prop_map(Version::Valid),
        1 => Just(Version::Missing),
        1 => prop_oneof![
            Just(String::new()),
            Just("2099-01-01".to_owned()),
            Just("2020-9-1".to_owned()),
            Just("latest".to_owned()),
            text(16),
        ]
        .prop_map(Version::Value),
        1 => valid.clone().prop_map(Version::Encoded),
        1 => ("[0-9-]{0,10}", valid.clone()).prop_map(|(a, b)| Version::Twice(a, b)),
        1 => valid.prop_map(Version::WrongCaseName),
    ]
    .boxed()
}

/// One route's expected query parameter: kept, changed or dropped.
#[derive(Clone, Debug)]
enum Param {
    Kept,
    Changed(String),
    Dropped,
}

fn param() -> BoxedStrategy<Param> {
    prop_oneof![
        10 => Just(Param::Kept),
        1 => text(12).prop_map(Param::Changed),
        1 => Just(Param::Dropped),
    ]
    .boxed()
}

/// One request before it is written out.
#[derive(Clone)]
pub struct Spec {
    /// `METHOD /path` of the route it was made from.
    pub route: String,
    pub method: String,
    /// As on the wire: percent-encoded.
    pub path: String,
    /// `?...` as on the wire, or empty.
    pub query: String,
    /// The query's pairs, decoded, `api-version` included.
    pub query_pairs: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    line: Line,
    headers: Headers,
    bad_header: BadHeader,
    framing: Framing,
    flips: Flips,
}

impl Spec {
    /// The `Content-Type` sent, if any.
    pub fn content_type(&self) -> Option<&'static str> {
        self.headers.content_type
    }
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}{} content-type={:?} body={}",
            self.method,
            self.path,
            self.query,
            self.headers.content_type,
            preview(self.body.as_deref().unwrap_or_default())
        )
    }
}

fn route_spec(api: &Api, route: &Route, knobs: Knobs) -> BoxedStrategy<Spec> {
    let template = route.path;
    let placeholders = template.matches("{}").count();
    let route_method = route.method;
    let method = prop_oneof![
        12 => Just(route_method.to_owned()),
        2 => select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]).prop_map(str::to_owned),
        1 => "[A-Z]{1,8}".prop_filter("no bodiless answers", |m| m != "HEAD" && m != "CONNECT"),
    ];
    let id_strategy = route.ids.clone().unwrap_or_else(|| api.ids.clone());
    let ids = vec((id_strategy, id_form(knobs)), placeholders..=placeholders);
    let path = (ids, path_damage()).prop_map(move |(ids, damage)| build_path(template, &ids, &damage));
    let query_spec = route.query;
    let params = vec(param(), query_spec.len()..=query_spec.len());
    let extra_params = vec(("[a-zA-Z-]{1,10}", text(10)), 0..2);
    let query = (version(api.api_versions), params, extra_params)
        .prop_map(move |(v, params, extra)| build_query(&v, query_spec, &params, &extra));
    let what_route = format!("{route_method} {template}");
    (
        method,
        path,
        query,
        line(knobs),
        headers(),
        bad_header(knobs),
        framing(knobs),
        route.body.clone(),
        flips(knobs),
    )
        .prop_map(
            move |(method, path, (query, query_pairs), line, headers, bad_header, framing, body, flips)| {
                // HTTP/1.0 has no chunked encoding: together they are malformed.
                let framing = match (&line, framing) {
                    (Line::Http10, Framing::Chunked { .. }) if !knobs.malformed_http => Framing::Length,
                    (_, framing) => framing,
                };
                Spec {
                    route: what_route.clone(),
                    method,
                    path,
                    query,
                    query_pairs,
                    body,
                    line,
                    headers,
                    bad_header,
                    framing,
                    flips,
                }
            },
        )
        .boxed()
}

/// Bytes a path segment may carry unencoded (RFC 3986 pchar minus `%`).
fn segment_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

fn encode(bytes: &[u8], all: bool) -> String {
    let mut out = String::new();
    for &b in bytes {
        if !all && segment_safe(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_encode(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn build_path(template: &str, ids: &[(String, IdForm)], damage: &PathDamage) -> String {
    let mut ids = ids.iter();
    let mut path = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("{}") {
        path.push_str(&rest[..at]);
        if let Some((id, form)) = ids.next() {
            path.push_str(&match form {
                IdForm::Encoded => encode(id.as_bytes(), false),
                IdForm::AllEncoded => encode(id.as_bytes(), true),
                IdForm::RawBytes(bytes) => encode(bytes, true),
                IdForm::Raw => id.clone(),
            });
        }
        rest = &rest[at + 2..];
    }
    path.push_str(rest);
    match damage {
        PathDamage::None => {}
        PathDamage::TrailingSlash => path.push('/'),
        PathDamage::DoubleSlash => path = path.replacen('/', "//", 1),
        PathDamage::ExtraSegment(s) => {
            path.push('/');
            path.push_str(s);
        }
        PathDamage::DotSegments => path = format!("/x/..{path}"),
        PathDamage::UpperCase => path = path.to_uppercase(),
        PathDamage::EncodedLetter => {
            if let Some(i) = path.find(|c: char| c.is_ascii_lowercase()) {
                let c = path.as_bytes()[i];
                path.replace_range(i..=i, &format!("%{c:02X}"));
            }
        }
    }
    path
}

fn build_query(
    version: &Version,
    spec: &[(&str, &str)],
    params: &[Param],
    extra: &[(String, String)],
) -> (String, Vec<(String, String)>) {
    let mut pairs: Vec<String> = Vec::new();
    let mut decoded: Vec<(String, String)> = Vec::new();
    let mut add = |raw: String, name: &str, value: &str| {
        pairs.push(raw);
        decoded.push((name.to_owned(), value.to_owned()));
    };
    let av = "api-version";
    match version {
        Version::Valid(v) => add(format!("{av}={v}"), av, v),
        Version::Missing => {}
        Version::Value(v) => add(format!("{av}={}", query_encode(v)), av, v),
        Version::Encoded(v) => add(format!("{av}={}", encode(v.as_bytes(), true)), av, v),
        Version::Twice(a, b) => {
            add(format!("{av}={}", query_encode(a)), av, a);
            add(format!("{av}={b}"), av, b);
        }
        Version::WrongCaseName(v) => add(format!("API-Version={v}"), "API-Version", v),
    }
    for ((name, value), param) in spec.iter().zip(params) {
        match param {
            Param::Kept => add(format!("{name}={value}"), name, value),
            Param::Changed(v) => add(format!("{name}={}", query_encode(v)), name, v),
            Param::Dropped => {}
        }
    }
    for (name, value) in extra {
        add(
            format!("{}={}", query_encode(name), query_encode(value)),
            name,
            value,
        );
    }
    let raw = if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    };
    (raw, decoded)
}

fn assemble(p: Spec) -> Case {
    let mut what = vec![p.route.clone()];
    let target = format!("{}{}", p.path, p.query);
    let method = if matches!(p.line, Line::LowerMethod) {
        p.method.to_lowercase()
    } else {
        p.method.clone()
    };
    let mut head = String::new();
    match &p.line {
        Line::Normal | Line::LowerMethod => head.push_str(&format!("{method} {target} HTTP/1.1\r\n")),
        Line::Http10 => head.push_str(&format!("{method} {target} HTTP/1.0\r\n")),
        Line::Absolute => head.push_str(&format!("{method} http://localhost{target} HTTP/1.1\r\n")),
        Line::LeadingEmptyLine => head.push_str(&format!("\r\n{method} {target} HTTP/1.1\r\n")),
        Line::DoubleSpace => head.push_str(&format!("{method}  {target} HTTP/1.1\r\n")),
        Line::NoVersion => head.push_str(&format!("{method} {target}\r\n")),
        Line::Version(v) => head.push_str(&format!("{method} {target} {v}\r\n")),
        Line::Trailing => head.push_str(&format!("{method} {target} HTTP/1.1 extra\r\n")),
        Line::Asterisk => head.push_str(&format!("{method} * HTTP/1.1\r\n")),
        Line::NoSlash => head.push_str(&format!(
            "{method} {} HTTP/1.1\r\n",
            target.trim_start_matches('/')
        )),
        Line::RawSpaceInTarget => head.push_str(&format!("{method} {target} x HTTP/1.1\r\n")),
        Line::RawUnicodeInTarget => head.push_str(&format!("{method} {target}\u{e9}\u{1F600} HTTP/1.1\r\n")),
    }
    if !matches!(p.line, Line::Normal) {
        what.push(format!("{:?}", p.line));
    }
    let h = &p.headers;
    if h.host {
        head.push_str("Host: localhost\r\n");
    }
    let body = p.body.clone().unwrap_or_default();
    if let Some(ct) = h.content_type {
        if !body.is_empty() || ct.is_empty() {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
    }
    if let Some(c) = h.connection {
        head.push_str(&format!("Connection: {c}\r\n"));
    }
    if h.expect {
        head.push_str("Expect: 100-continue\r\n");
        what.push("expect".into());
    }
    for (name, value) in &h.extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &p.bad_header {
        BadHeader::None => {}
        BadHeader::NoColon => head.push_str("X-No-Colon\r\n"),
        BadHeader::SpaceInName => head.push_str("X Bad: 1\r\n"),
        BadHeader::ObsFold => head.push_str("X-Folded: a\r\n  b\r\n"),
        BadHeader::NulInValue => head.push_str("X-Nul: a\0b\r\n"),
        BadHeader::CrInValue => head.push_str("X-Cr: a\rb\r\n"),
        BadHeader::Many(n) => {
            for i in 0..*n {
                head.push_str(&format!("X-H{i}: {i}\r\n"));
            }
        }
        BadHeader::Huge(n) => head.push_str(&format!("X-Huge: {}\r\n", "h".repeat(*n))),
        BadHeader::EmptyName => head.push_str(": value\r\n"),
    }
    if !matches!(p.bad_header, BadHeader::None) {
        what.push(format!("header {:?}", short(&p.bad_header)));
    }
    let mut tail: Vec<u8> = Vec::new();
    match &p.framing {
        Framing::Length => {
            if !body.is_empty() {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            tail.extend_from_slice(&body);
        }
        Framing::Chunked {
            sizes,
            extension,
            trailer,
        } => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            tail = chunk(&body, sizes, *extension, *trailer);
        }
        Framing::Unframed => tail.extend_from_slice(&body),
        Framing::Short(n) => {
            head.push_str(&format!("Content-Length: {}\r\n", body.len().saturating_sub(*n)));
            tail.extend_from_slice(&body);
        }
        Framing::Long(n) => {
            head.push_str(&format!("Content-Length: {}\r\n", body.len() + n));
            tail.extend_from_slice(&body);
        }
        Framing::LengthText(s) => {
            head.push_str(&format!("Content-Length: {s}\r\n"));
            tail.extend_from_slice(&body);
        }
        Framing::TwoLengths => {
            head.push_str(&format!(
                "Content-Length: {}\r\nContent-Length: {}\r\n",
                body.len(),
                body.len() + 1
            ));
            tail.extend_from_slice(&body);
        }
        Framing::LengthAndChunked => {
            head.push_str(&format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            ));
            tail = chunk(&body, &[7], false, false);
        }
        Framing::BadChunkSize => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            tail.extend_from_slice(b"zz\r\n");
            tail.extend_from_slice(&body);
            tail.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        Framing::ChunkedNoEnd => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            let mut t = chunk(&body, &[5], false, false);
            t.truncate(t.len().saturating_sub(5));
            tail = t;
        }
        Framing::ChunkedTruncated => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            tail.extend_from_slice(format!("{:x}\r\n", body.len() + 10).as_bytes());
            tail.extend_from_slice(&body);
        }
    }
    if !matches!(p.framing, Framing::Length) {
        what.push(format!("{:?}", short(&p.framing)));
    }
    head.push_str("\r\n");
    let mut head = head.into_bytes();
    for (at, byte, insert) in &p.flips {
        let i = ((head.len() as f64) * at) as usize % head.len().max(1);
        if *insert {
            head.insert(i, *byte);
        } else {
            head[i] = *byte;
        }
    }
    if !p.flips.is_empty() {
        what.push(format!("{} flipped byte(s)", p.flips.len()));
    }
    let complete = p.framing.complete() && p.flips.is_empty();
    head.extend_from_slice(&tail);
    Case {
        bytes: head,
        complete,
        what: what.join(", "),
    }
}

fn short(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    s.chars().take(40).collect()
}

fn chunk(body: &[u8], sizes: &[usize], extension: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(rest.len()).clamp(1, rest.len());
        out.extend_from_slice(format!("{n:x}").as_bytes());
        if extension {
            out.extend_from_slice(b";name=value");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"X-Trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---- JSON ------------------------------------------------------------------------------------

/// Any text of up to `max` characters (every Unicode scalar value, controls included). Cheaper
/// than a `\PC` regex strategy, which matters at a million cases.
pub fn text(max: usize) -> BoxedStrategy<String> {
    vec(any::<char>(), 0..=max)
        .prop_map(|chars| chars.into_iter().collect())
        .boxed()
}

/// Strings a parser may not expect: empty, blank, control characters, any Unicode, path-like,
/// percent-like, and long ones up to `max_len` characters.
pub fn odd_string(max_len: usize) -> BoxedStrategy<String> {
    let long = (1..=max_len.max(1)).prop_map(|n| "a".repeat(n));
    prop_oneof![
        4 => "[a-zA-Z0-9_.-]{1,24}",
        3 => text(24),
        1 => Just(String::new()),
        1 => Just(" ".to_owned()),
        1 => "[\\x00-\\x1f\\x7f]{1,4}",
        1 => select(vec!["..", "../../etc/passwd", "/", "a/b", "%FF", "%00", "\u{FFFD}", "\u{0}", "é", "\u{1F600}", "CON", "a\u{300}"])
            .prop_map(str::to_owned),
        1 => long,
    ]
    .boxed()
}

/// Any JSON value, a few levels deep.
pub fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        odd_string(64).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-zA-Z]{0,10}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Standard base64 of random bytes (what routes want), and what they must refuse: no padding,
/// the URL-safe alphabet, whitespace, non-base64, empty.
pub fn b64_string(max_bytes: usize) -> BoxedStrategy<String> {
    let bytes = vec(any::<u8>(), 0..=max_bytes);
    prop_oneof![
        8 => bytes.clone().prop_map(|b| b64(&b)),
        1 => bytes.clone().prop_map(|b| b64(&b).trim_end_matches('=').to_owned()),
        1 => bytes.clone().prop_map(|b| b64(&b).replace('+', "-").replace('/', "_")),
        1 => bytes.prop_map(|b| {
            let s = b64(&b);
            let mid = s.len() / 2;
            format!("{} {}\n", &s[..mid], &s[mid..])
        }),
        1 => "[^A-Za-z0-9+/=]{1,12}",
        1 => Just(String::new()),
        1 => Just("====".to_owned()),
    ]
    .boxed()
}

/// Standard base64 with padding (RFC 4648), written here so testkit needs no codec.
pub fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A valid body (from `template`), usually damaged: a field dropped, given a value of the
/// wrong type, renamed, an unknown field added, or the whole body of another shape.
pub fn mutate_json(template: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    template
        .prop_flat_map(|valid| {
            let keys: Vec<String> = valid
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let n = keys.len().max(1);
            let v = valid.clone();
            prop_oneof![
                6 => Just(valid.clone()),
                2 => (0..n).prop_map(move |i| {
                    let mut v = v.clone();
                    if let (Some(o), Some(k)) = (v.as_object_mut(), keys.get(i)) {
                        o.remove(k);
                    }
                    v
                }),
                2 => (0..n, json_value()).prop_map({
                    let v = valid.clone();
                    move |(i, new)| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            if let Some(k) = o.keys().nth(i).cloned() {
                                o.insert(k, new);
                            }
                        }
                        v
                    }
                }),
                1 => ("[a-zA-Z]{1,12}", json_value()).prop_map({
                    let v = valid.clone();
                    move |(k, new)| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.insert(k, new);
                        }
                        v
                    }
                }),
                1 => Just(valid.clone()).prop_map(|v| {
                    let mut out = Map::new();
                    if let Some(o) = v.as_object() {
                        for (k, val) in o {
                            out.insert(k.to_uppercase(), val.clone());
                        }
                    }
                    Value::Object(out)
                }),
                1 => Just(Value::Array(vec![valid])),
                1 => json_value(),
            ]
        })
        .boxed()
}

/// A route's body on the wire: its JSON (usually), none, or bytes that are not the JSON it
/// wants: invalid UTF-8, cut short, nested past any parser's depth, absurd numbers, duplicated
/// keys.
pub fn body_bytes(json: BoxedStrategy<Value>) -> BoxedStrategy<Option<Vec<u8>>> {
    let text = json.clone().prop_map(|v| v.to_string().into_bytes());
    prop_oneof![
        16 => text.clone().prop_map(Some),
        2 => Just(None),
        1 => vec(any::<u8>(), 1..64).prop_map(Some),
        1 => (text.clone(), 0.0f64..1.0).prop_map(|(t, f)| {
            let cut = ((t.len() as f64) * f) as usize;
            Some(t[..cut.max(1).min(t.len())].to_vec())
        }),
        1 => prop_oneof![Just(200usize), Just(5_000), Just(100_000)]
            .prop_map(|depth| Some(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes())),
        1 => prop_oneof![
            Just(b"1e999999".to_vec()),
            Just(b"-0".to_vec()),
            Just(format!("{{\"a\":{}}}", "9".repeat(500)).into_bytes()),
            Just(b"{\"a\":1,\"a\":2}".to_vec()),
            Just(b"\xEF\xBB\xBF{}".to_vec()),
            Just(b"{\"keyId\":\"\\ud800\"}".to_vec()),
            Just(b"null".to_vec()),
            Just(b" ".to_vec()),
        ]
        .prop_map(Some),
        1 => (text, vec(any::<u8>(), 1..8)).prop_map(|(mut t, junk)| {
            t.extend_from_slice(&junk);
            Some(t)
        }),
    ]
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_matches_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(input.as_bytes()), output);
        }
    }

    #[test]
    fn chunking_round_trips() {
        assert_eq!(chunk(b"hello", &[2], false, false), b"2\r\nhe\r\n2\r\nll\r\n1\r\no\r\n0\r\n\r\n");
        assert_eq!(chunk(b"", &[], false, true), b"0\r\nX-Trailer: t\r\n\r\n");
    }

    #[test]
    fn paths_encode_ids() {
        let p = build_path("/key/{}", &[("a b/%".into(), IdForm::Encoded)], &PathDamage::None);
        assert_eq!(p, "/key/a%20b%2F%25");
        let p = build_path("/key/{}", &[("x".into(), IdForm::RawBytes(vec![0xff]))], &PathDamage::TrailingSlash);
        assert_eq!(p, "/key/%FF/");
    }
}
