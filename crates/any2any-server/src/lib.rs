//! An OpenAI-compatible HTTP server for any2any models (axum + tokio).
//!
//! Routes: `GET /v1/models` (each model with its capabilities), `GET /health`, `GET /ready`,
//! `GET /metrics` (Prometheus), `POST /v1/chat/completions` (text and image input, streaming),
//! `POST /v1/images/generations`, `POST /v1/images/edits` (multipart, masks), `GET
//! /openapi.json` and the playground page at `/`. Every request field is honoured or refused
//! with a 400 naming it, in OpenAI's error envelope `{"error": {"message", "type", "param",
//! "code"}}`.
//!
//! Each model runs on its own engine thread ([`engine`]): concurrent requests are queued and
//! coalesced into one `generate_batch` (up to `max_batch`), each answered as it would be alone
//! with its seed; a full queue answers 429 with `Retry-After`; a client that disconnects
//! cancels its rows.
//!
//! ```no_run
//! use any2any_server::{serve, ServedModel, ServerConfig};
//! # fn load() -> Box<dyn any2any_core::Backend> { unimplemented!() }
//! let models = vec![ServedModel { id: "janus".into(), backend: load() }];
//! serve(ServerConfig::default(), models)?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![warn(missing_docs)]

pub mod chat;
pub mod engine;
pub mod error;
pub mod images;
pub mod media;
pub mod metrics;

use any2any_core::{Backend, Capabilities, Direction, ModelInfo, Output, Request};
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{header, Request as HttpRequest, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::{Engine, EngineConfig, JobEvent, SubmitError};
use error::{ApiError, ApiResult};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// What the server accepts at most; each limit, when passed, is a 4xx naming the field.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of a request body.
    pub max_body_bytes: usize,
    /// Bytes of one image (encoded).
    pub max_image_bytes: usize,
    /// Pixels of one image (checked from its header, before decoding).
    pub max_image_pixels: usize,
    /// Images in one chat request.
    pub max_images: usize,
    /// `n` (choices or images per request).
    pub max_n: usize,
    /// `max_tokens` / `max_completion_tokens`.
    pub max_tokens: usize,
    /// `steps` of the iterative families.
    pub max_steps: usize,
    /// Characters of a prompt (all messages together).
    pub max_prompt_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_image_bytes: 20 << 20,
            max_image_pixels: 16 << 20,
            max_images: 8,
            max_n: 10,
            max_tokens: 4096,
            max_steps: 1000,
            max_prompt_chars: 32_000,
        }
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (loopback by default).
    pub host: String,
    /// Port (0: any free port).
    pub port: u16,
    /// With a key, every route but `/health` (and the page at `/`) needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Most requests coalesced into one `generate_batch`.
    pub max_batch: usize,
    /// Most requests waiting per model; more get 429.
    pub max_queue: usize,
    /// How long an engine waits for more requests after the first of a batch.
    pub batch_window: Duration,
    /// Per-request timeout (queueing included); past it the answer is 504 and the rows are cancelled.
    pub timeout: Duration,
    /// Input limits.
    pub limits: Limits,
    /// A directory whose files chat requests may name as `file://` image URLs.
    pub allowed_local_media: Option<PathBuf>,
    /// How long [`serve`] lets in-flight requests finish after SIGINT or SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            max_batch: 8,
            max_queue: 64,
            batch_window: Duration::from_millis(5),
            timeout: Duration::from_secs(600),
            limits: Limits::default(),
            allowed_local_media: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A loaded model and the id clients name it by.
pub struct ServedModel {
    /// The id of `/v1/models` and of the `model` field.
    pub id: String,
    /// The loaded family backend.
    pub backend: Box<dyn Backend>,
}

/// A model being served.
pub struct ModelEntry {
    /// Its id.
    pub id: String,
    /// The backend (shared with the engine thread).
    pub backend: Arc<dyn Backend>,
    /// Its engine.
    pub engine: Engine,
    /// What the family does.
    pub caps: Capabilities,
    /// What the model is.
    pub info: ModelInfo,
}

/// The state every handler shares.
pub struct AppState {
    /// The models, in the order given.
    pub models: Vec<ModelEntry>,
    /// The configuration.
    pub cfg: ServerConfig,
    /// Request counters.
    pub metrics: metrics::Metrics,
    /// Images of `url` answers.
    pub files: images::FileStore,
}

impl AppState {
    /// Starts an engine per model.
    pub fn new(cfg: ServerConfig, models: Vec<ServedModel>) -> std::io::Result<Self> {
        let ecfg = EngineConfig {
            max_batch: cfg.max_batch,
            max_queue: cfg.max_queue,
            batch_window: cfg.batch_window,
        };
        let models = models
            .into_iter()
            .map(|m| {
                let backend: Arc<dyn Backend> = Arc::from(m.backend);
                Ok(ModelEntry {
                    engine: Engine::start(&m.id, backend.clone(), ecfg.clone())?,
                    caps: backend.capabilities(),
                    info: backend.info(),
                    id: m.id,
                    backend,
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            models,
            cfg,
            metrics: metrics::Metrics::default(),
            files: images::FileStore::new(256, Duration::from_secs(3600)),
        })
    }

    fn ids(&self) -> Vec<String> {
        self.models.iter().map(|m| m.id.clone()).collect()
    }

    /// The model of that id (404 otherwise).
    pub fn model(&self, id: &str) -> ApiResult<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ApiError::model_not_found(id, &self.ids()))
    }

    /// The model of that id, or the only one loaded when none is named.
    pub fn model_or_only(&self, id: Option<&str>) -> ApiResult<&ModelEntry> {
        match (id, self.models.as_slice()) {
            (Some(id), _) => self.model(id),
            (None, [only]) => Ok(only),
            (None, _) => Err(ApiError::invalid(
                "model",
                format!(
                    "several models are loaded; name one ({})",
                    self.ids().join(", ")
                ),
            )),
        }
    }

    /// Checks a request against the model's family, then queues it (429 when full), with
    /// image previews when `previews` is set.
    pub fn submit(
        &self,
        m: &ModelEntry,
        req: Request,
        previews: bool,
        field: fn(&str) -> String,
    ) -> ApiResult<UnboundedReceiver<JobEvent>> {
        m.backend
            .check(&req)
            .map_err(|e| ApiError::from_core(&e, field))?;
        m.engine.submit(req, previews).map_err(|e| match e {
            SubmitError::Full(n) => ApiError::queue_full(&m.id, n),
            SubmitError::Stopped => {
                ApiError::unavailable(format!("the engine of `{}` stopped", m.id))
            }
        })
    }
}

/// Waits for a request's outputs (text deltas dropped), until `deadline`.
pub async fn wait_outputs(
    rx: &mut UnboundedReceiver<JobEvent>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    field: fn(&str) -> String,
) -> ApiResult<Vec<Output>> {
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(JobEvent::Text { .. } | JobEvent::Preview { .. })) => {}
            Ok(Some(JobEvent::Done(r))) => return r.map_err(|e| ApiError::from_core(&e, field)),
            Ok(None) => return Err(ApiError::unavailable("the model's engine stopped")),
            Err(_) => return Err(ApiError::timeout(timeout.as_secs_f64())),
        }
    }
}

/// Parses a JSON body into `T`, refusing unknown fields by name (400).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let name = |prefix: &str| {
            msg.strip_prefix(prefix)
                .and_then(|r| r.split('`').next())
                .map(str::to_string)
        };
        if let Some(f) = name("unknown field `") {
            ApiError::unsupported(&f, "this server does not honour it")
        } else if let Some(f) = name("missing field `") {
            ApiError::invalid(f.clone(), format!("`{f}` is required"))
        } else {
            ApiError::bad_body(format!("the body is not valid for this route: {msg}"))
        }
    })
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A fresh id: `prefix` and 128 random bits in hex.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}{:016x}", random_u64(), random_u64())
}

/// A seed for a request that gives none (OpenAI samples afresh each time).
pub fn fresh_seed() -> u64 {
    random_u64()
}

/// The capability names of a family: text, image_in, image_out, edit, interleaved.
pub fn capability_names(c: &Capabilities) -> Vec<&'static str> {
    let d = c.direction_list();
    let mut out = Vec::new();
    if d.contains(&Direction::TextToText) {
        out.push("text");
    }
    if d.contains(&Direction::ImageToText) {
        out.push("image_in");
    }
    if d.contains(&Direction::TextToImage) {
        out.push("image_out");
    }
    if !c.edits.is_empty() {
        out.push("edit");
    }
    if d.contains(&Direction::Interleaved) {
        out.push("interleaved");
    }
    out
}

fn model_json(m: &ModelEntry) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": 0,
        "owned_by": "any2any",
        "family": m.info.family,
        "capabilities": capability_names(&m.caps),
        "directions": m.info.directions,
        "image_size": m.info.image_size.map(|(h, w)| format!("{w}x{h}")),
        "edits": m.caps.edits.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

async fn list_models(State(st): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = st.models.iter().map(model_json).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_model(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match st.model(&id) {
        Ok(m) => axum::Json(model_json(m)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let down: Vec<&str> = st
        .models
        .iter()
        .filter(|m| !m.engine.is_alive())
        .map(|m| m.id.as_str())
        .collect();
    if down.is_empty() && !st.models.is_empty() {
        axum::Json(json!({"status": "ready", "models": st.ids()})).into_response()
    } else {
        ApiError::unavailable(format!("engines not running: {}", down.join(", "))).into_response()
    }
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let models: Vec<(&str, &metrics::ModelMetrics)> = st
        .models
        .iter()
        .map(|m| (m.id.as_str(), m.engine.metrics.as_ref()))
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(&models),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of the API.
pub const OPENAPI: &str = include_str!("../static/openapi.json");
/// The playground page.
pub const PLAYGROUND: &str = include_str!("../static/index.html");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn playground() -> Html<&'static str> {
    Html(PLAYGROUND)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no route {uri}")).into_response()
}

/// Bearer auth (with an API key), request counting, and the error envelope for axum's own
/// rejections (body too large, bad multipart).
async fn guard(
    State(st): State<Arc<AppState>>,
    req: HttpRequest<axum::body::Body>,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let open = path == "/health" || path == "/" || path.starts_with("/v1/images/files/");
    let res = match (&st.cfg.api_key, open) {
        (Some(key), false) if !authorized(&req, key) => ApiError::unauthorized().into_response(),
        _ => next.run(req).await,
    };
    let res = envelope(res).await;
    st.metrics.count_request(&route, res.status().as_u16());
    res
}

fn authorized(req: &HttpRequest<axum::body::Body>, key: &str) -> bool {
    let got = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // constant time in the key's length
    got.len() == key.len()
        && got
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

/// Wraps a plain-text error of axum (an extractor's rejection) in the OpenAI envelope.
async fn envelope(res: Response) -> Response {
    let s = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(s.is_client_error() || s.is_server_error()) || is_json {
        return res;
    }
    let body = axum::body::to_bytes(res.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&body).into_owned();
    let mut e = if s == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::bad_body(format!(
            "the request body is over the server's limit: {msg}"
        ))
        .with_code("body_too_large")
    } else {
        ApiError::bad_body(msg)
    };
    e.status = s;
    e.into_response()
}

/// The router over a state (engines started).
pub fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(playground))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/images/edits", post(images::edits))
        .route("/v1/images/files/{name}", get(images::file))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(st.clone(), guard))
        .layer(DefaultBodyLimit::max(st.cfg.limits.max_body_bytes))
        .with_state(st)
}

/// A server running on its own threads (for tests and embedding); stops when dropped.
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Starts the server in the background and returns once it listens.
pub fn spawn(cfg: ServerConfig, models: Vec<ServedModel>) -> std::io::Result<RunningServer> {
    let rt = runtime()?;
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = rt.block_on(tokio::net::TcpListener::bind(&addr))?;
    let local = listener.local_addr()?;
    let app = router(Arc::new(AppState::new(cfg, models)?));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("any2any-server".into())
        .spawn(move || {
            rt.block_on(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })?;
    Ok(RunningServer {
        addr: local,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Serves until SIGINT (Ctrl-C) or SIGTERM, printing the address it listens on.
///
/// On the first signal the server stops accepting connections and lets the requests in flight
/// finish (each still bounded by [`ServerConfig::timeout`]) for up to
/// [`ServerConfig::shutdown_grace`]; then, or at a second signal, it returns `Ok` and what is
/// still running is abandoned (its clients see the connection close).
pub fn serve(cfg: ServerConfig, models: Vec<ServedModel>) -> std::io::Result<()> {
    let rt = runtime()?;
    let grace = cfg.shutdown_grace;
    let res = rt.block_on(async move {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let local = listener.local_addr()?;
        let st = Arc::new(AppState::new(cfg, models)?);
        // handlers in place before the address is announced
        let mut signals = Signals::new()?;
        eprintln!("any2any: serving {} on http://{local}", st.ids().join(", "));
        let (draining, drained) = tokio::sync::oneshot::channel::<Signals>();
        let server = axum::serve(listener, router(st)).with_graceful_shutdown(async move {
            let name = signals.next().await;
            eprintln!(
                "any2any: {name}: no new connections; requests in flight get {} s to finish \
                 (a second signal stops now)",
                grace.as_secs()
            );
            let _ = draining.send(signals);
        });
        let deadline = async move {
            let Ok(mut signals) = drained.await else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = signals.next() => {}
            }
        };
        tokio::select! {
            r = server => r,
            () = deadline => {
                eprintln!("any2any: stopped with requests still in flight");
                Ok(())
            }
        }
    });
    // Engine threads may still run a batch: they end with the process.
    rt.shutdown_timeout(Duration::from_millis(100));
    res
}

/// SIGINT and (on Unix) SIGTERM, listened to from creation on.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal; returns its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
