//! `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart), OpenAI's
//! fields plus the extensions `seed`, `guidance_scale`, `steps`, `negative_prompt`,
//! `temperature`, `top_k`, `top_p`, `speculative` (`jacobi[:W]` / `sjd[:W]`, AR image
//! families); `response_format` `b64_json` (raw base64) or `url` (served by
//! this server at `/v1/images/files/{name}` for an hour).

use crate::engine::JobEvent;
use crate::error::{image_field, ApiError, ApiResult};
use crate::media::{b64, decode_image, edit_mask, OutputFormat};
use crate::{now_secs, parse_json, AppState, ModelEntry};
use any2any_core::{Backend, GenerationParams, ImageInput, Modality, Output, Param, Request};
use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use image::RgbImage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The body of an image generation request; any other field is refused (400 naming it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// What to draw.
    pub prompt: String,
    /// The model id (optional when one model is loaded).
    pub model: Option<String>,
    /// Images to make, 1 to the server's cap (10 by default).
    pub n: Option<i64>,
    /// `"WxH"` or `"auto"`.
    pub size: Option<String>,
    /// `b64_json` (default) or `url`.
    pub response_format: Option<String>,
    /// `png` (default), `jpeg` or `webp`.
    pub output_format: Option<String>,
    /// Only `auto` is honoured.
    pub quality: Option<String>,
    /// `auto` or `opaque` (the families make opaque images).
    pub background: Option<String>,
    /// Stream the answer as server-sent events: `partial_images` previews while the image is
    /// drawn (families that report their codes step by step), then the completed image.
    pub stream: Option<bool>,
    /// Previews per image when streaming, 0 to 3.
    pub partial_images: Option<i64>,
    /// An end-user id (accepted; not used).
    pub user: Option<String>,
    /// Extension: the seed of the draws.
    pub seed: Option<i64>,
    /// Extension: classifier-free guidance weight.
    pub guidance_scale: Option<f32>,
    /// Extension: denoising / unmasking steps.
    pub steps: Option<i64>,
    /// Extension: alias of `steps` (vLLM-Omni's spelling).
    pub num_inference_steps: Option<i64>,
    /// Extension: the unconditioned prompt of guidance.
    pub negative_prompt: Option<String>,
    /// Extension: sampling temperature of image tokens.
    pub temperature: Option<f32>,
    /// Extension: top-k of image tokens.
    pub top_k: Option<i64>,
    /// Extension: top-p of image tokens.
    pub top_p: Option<f32>,
    /// Extension: speculative Jacobi decoding of an AR image loop, `jacobi[:W]` or `sjd[:W]`.
    pub speculative: Option<String>,
}

/// The handler of `/v1/images/generations`.
pub async fn generations(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let ir: ImageRequest = parse_json(&body)?;
        let m = st.model_or_only(ir.model.as_deref())?;
        let req = build(&st, m, &ir, None)?;
        respond(&st, m, &ir, req, &headers, "image_generation").await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The handler of `/v1/images/edits`: multipart `image` (or one `image[]`), optional `mask`,
/// `prompt` and the other fields as text.
pub async fn edits(State(st): State<Arc<AppState>>, headers: HeaderMap, mp: Multipart) -> Response {
    let run = async {
        let (ir, image, mask) = read_edit_form(&st, mp).await?;
        let m = st.model_or_only(ir.model.as_deref())?;
        let Some(image) = image else {
            return Err(ApiError::invalid("image", "an edit needs an `image` file"));
        };
        let lim = &st.cfg.limits;
        let mut input = ImageInput::new(decode_image(&image, lim, "image")?.to_rgb8());
        if let Some(mask) = mask {
            let mk = edit_mask(decode_image(&mask, lim, "mask")?);
            if mk.dimensions() != input.pixels.dimensions() {
                return Err(ApiError::invalid(
                    "mask",
                    format!(
                        "the mask is {}x{} but the image is {}x{}; they must be the same size",
                        mk.width(),
                        mk.height(),
                        input.width(),
                        input.height()
                    ),
                ));
            }
            input = input
                .with_mask(mk)
                .map_err(|e| ApiError::from_core(&e, image_field))?;
        }
        let req = build(&st, m, &ir, Some(input))?;
        respond(&st, m, &ir, req, &headers, "image_edit").await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn read_edit_form(
    st: &AppState,
    mut mp: Multipart,
) -> ApiResult<(ImageRequest, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_body(format!("malformed multipart body: {e}"))
    };
    let mut form: serde_json::Map<String, Value> = serde_json::Map::new();
    let (mut image, mut mask) = (None, None);
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" | "image[]" | "mask" => {
                let data = field.bytes().await.map_err(bad)?;
                if data.len() > st.cfg.limits.max_image_bytes {
                    return Err(ApiError::invalid(
                        &name,
                        format!(
                            "`{name}` is over the server's {} image bytes",
                            st.cfg.limits.max_image_bytes
                        ),
                    ));
                }
                let slot = if name == "mask" {
                    &mut mask
                } else {
                    &mut image
                };
                if slot.replace(data.to_vec()).is_some() {
                    return Err(ApiError::unsupported(
                        &name,
                        "one image (and one mask) per edit",
                    ));
                }
            }
            _ => {
                let text = field.text().await.map_err(bad)?;
                form.insert(name.clone(), form_value(&name, text));
            }
        }
    }
    let ir: ImageRequest = parse_json(Value::Object(form).to_string().as_bytes())?;
    Ok((ir, image, mask))
}

/// A multipart text field as JSON: numbers for the numeric fields, strings otherwise.
fn form_value(name: &str, text: String) -> Value {
    let numeric = matches!(
        name,
        "n" | "seed"
            | "steps"
            | "num_inference_steps"
            | "top_k"
            | "guidance_scale"
            | "temperature"
            | "top_p"
    );
    if numeric {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if v.is_number() {
                return v;
            }
        }
    }
    if name == "stream" {
        return Value::Bool(text == "true");
    }
    Value::String(text)
}

fn count(v: Option<i64>, field: &str, max: usize) -> ApiResult<Option<usize>> {
    match v {
        None => Ok(None),
        Some(x) if x < 1 || x as u64 > max as u64 => Err(ApiError::invalid(
            field,
            format!("`{field}` is {x}; it must be in 1..={max}"),
        )),
        Some(x) => Ok(Some(x as usize)),
    }
}

fn refuse_options(ir: &ImageRequest) -> ApiResult<()> {
    match ir.partial_images {
        Some(_) if ir.stream != Some(true) => {
            return Err(ApiError::invalid(
                "partial_images",
                "`partial_images` needs `stream: true`",
            ))
        }
        Some(p) if !(0..=3).contains(&p) => {
            return Err(ApiError::invalid(
                "partial_images",
                format!("`partial_images` is {p}; it must be in 0..=3"),
            ))
        }
        _ => {}
    }
    if ir.stream == Some(true) && ir.response_format.as_deref() == Some("url") {
        return Err(ApiError::unsupported(
            "response_format",
            "a streamed answer carries b64_json",
        ));
    }
    if let Some(q) = ir.quality.as_deref().filter(|q| *q != "auto") {
        return Err(ApiError::unsupported(
            "quality",
            format!("`{q}`: only \"auto\" (the family's own quality)"),
        ));
    }
    if let Some(b) = ir
        .background
        .as_deref()
        .filter(|b| !matches!(*b, "auto" | "opaque"))
    {
        return Err(ApiError::unsupported(
            "background",
            format!("`{b}`: the families make opaque images"),
        ));
    }
    match ir.response_format.as_deref() {
        None | Some("b64_json" | "url") => {}
        Some(o) => {
            return Err(ApiError::invalid(
                "response_format",
                format!("`{o}` is not b64_json or url"),
            ))
        }
    }
    if ir.prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt", "`prompt` is empty"));
    }
    if ir.steps.is_some() && ir.num_inference_steps.is_some() {
        return Err(ApiError::invalid(
            "num_inference_steps",
            "send `steps` or `num_inference_steps`, not both",
        ));
    }
    Ok(())
}

/// The size asked for: passed to a family that takes any size, checked against the fixed size
/// of the others.
fn size(
    m: &ModelEntry,
    s: Option<&str>,
    edit: bool,
    max_pixels: usize,
) -> ApiResult<Option<(usize, usize)>> {
    let Some(s) = s.filter(|s| *s != "auto") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "size",
            format!("`{s}` is not WIDTHxHEIGHT (e.g. 384x384) or auto"),
        )
    };
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (usize, usize) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    let d = if edit {
        any2any_core::Direction::ImageToImage
    } else {
        any2any_core::Direction::TextToImage
    };
    let free = m
        .caps
        .directions
        .iter()
        .any(|(x, p)| *x == d && p.contains(&Param::Size));
    if free {
        if w.saturating_mul(h) > max_pixels {
            return Err(ApiError::invalid(
                "size",
                format!("`{s}` is over the server's {max_pixels} pixels per image"),
            ));
        }
        return Ok(Some((w, h)));
    }
    match m.info.image_size {
        Some((fh, fw)) if (fw, fh) == (w, h) => Ok(None),
        Some((fh, fw)) => Err(ApiError::invalid(
            "size",
            format!("`{s}`: {} makes {fw}x{fh} images only", m.id),
        )),
        None => Err(ApiError::invalid(
            "size",
            format!("{} does not make images", m.id),
        )),
    }
}

fn build(
    st: &AppState,
    m: &ModelEntry,
    ir: &ImageRequest,
    image: Option<ImageInput>,
) -> ApiResult<Request> {
    refuse_options(ir)?;
    let lim = &st.cfg.limits;
    let chars = ir.prompt.chars().count();
    if chars > lim.max_prompt_chars {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "`prompt` is {chars} characters; this server takes at most {}",
                lim.max_prompt_chars
            ),
        ));
    }
    if let Some(f) = &ir.output_format {
        OutputFormat::parse(f)?;
    }
    let params = GenerationParams {
        temperature: ir.temperature,
        top_k: count(ir.top_k, "top_k", usize::MAX)?,
        top_p: ir.top_p,
        cfg: ir.guidance_scale,
        steps: match ir.num_inference_steps {
            Some(s) => count(Some(s), "num_inference_steps", lim.max_steps)?,
            None => count(ir.steps, "steps", lim.max_steps)?,
        },
        size: size(m, ir.size.as_deref(), image.is_some(), lim.max_image_pixels)?,
        negative_prompt: ir.negative_prompt.clone(),
        speculative: ir
            .speculative
            .as_deref()
            .map(|s| {
                s.parse::<any2any_core::Speculative>()
                    .map_err(|e| ApiError::invalid("speculative", e.to_string()))
            })
            .transpose()?,
        seed: ir.seed.map(|s| s as u64).unwrap_or_else(crate::fresh_seed),
        ..Default::default()
    };
    let n = count(ir.n, "n", lim.max_n)?.unwrap_or(1);
    let mut req = Request::new();
    if let Some(img) = image {
        req = req.image(img);
    }
    Ok(req
        .text(ir.prompt.clone())
        .want(Modality::Image)
        .params(params)
        .num_outputs(n))
}

async fn respond(
    st: &AppState,
    m: &ModelEntry,
    ir: &ImageRequest,
    req: Request,
    headers: &HeaderMap,
    kind: &'static str,
) -> ApiResult<Response> {
    let deadline = tokio::time::Instant::now() + st.cfg.timeout;
    let fmt = OutputFormat::parse(ir.output_format.as_deref().unwrap_or("png"))?;
    let partial = ir.partial_images.unwrap_or(0) as usize;
    let stream = ir.stream == Some(true);
    let mut rx = st.submit(m, req, stream && partial > 0, image_field)?;
    if stream {
        let s = ImageStream {
            rx,
            backend: m.backend.clone(),
            fmt,
            partial,
            sent: Vec::new(),
            kind,
            deadline,
            timeout: st.cfg.timeout,
            done: false,
        };
        return Ok(s.into_response());
    }
    let outs: Vec<Output> =
        crate::wait_outputs(&mut rx, deadline, st.cfg.timeout, image_field).await?;
    let url = ir.response_format.as_deref() == Some("url");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    json_answer(st, &outs, fmt, url.then_some(host))
}

/// The non-streamed answer: every image as base64, or as a URL on `host` when one is given.
fn json_answer(
    st: &AppState,
    outs: &[Output],
    fmt: OutputFormat,
    url_host: Option<&str>,
) -> ApiResult<Response> {
    let mut data = Vec::new();
    let mut size = None;
    for img in outs.iter().flat_map(|o| o.images()) {
        size = Some(format!("{}x{}", img.width(), img.height()));
        let bytes = fmt.encode(img)?;
        data.push(match url_host {
            Some(host) => {
                let name = st.files.put(bytes, fmt);
                json!({"url": format!("http://{host}/v1/images/files/{name}"), "revised_prompt": null})
            }
            None => json!({"b64_json": b64().encode(bytes), "revised_prompt": null}),
        });
    }
    Ok(axum::Json(json!({
        "created": now_secs(),
        "data": data,
        "output_format": fmt.name(),
        "size": size,
        "quality": "auto",
        "background": "opaque",
    }))
    .into_response())
}

/// A streamed image answer: `{kind}.partial_image` events, then `{kind}.completed` per image.
struct ImageStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    backend: Arc<dyn Backend>,
    fmt: OutputFormat,
    partial: usize,
    /// Previews sent per output.
    sent: Vec<usize>,
    kind: &'static str,
    deadline: tokio::time::Instant,
    timeout: Duration,
    done: bool,
}

impl ImageStream {
    /// The SSE response that sends this stream's events, with keep-alive comments.
    fn into_response(self) -> Response {
        let events = futures_util::stream::unfold(self, |mut s| async move {
            let evs = s.next_events().await?;
            Some((
                futures_util::stream::iter(evs.into_iter().map(Ok::<Event, Infallible>)),
                s,
            ))
        });
        Sse::new(futures_util::StreamExt::flatten(events))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
            .into_response()
    }

    fn event(&self, what: &str, img: &RgbImage, extra: Value) -> Option<Event> {
        let bytes = self.fmt.encode(img).ok()?;
        let mut data = json!({
            "type": format!("{}.{what}", self.kind),
            "b64_json": b64().encode(bytes),
            "created_at": now_secs(),
            "size": format!("{}x{}", img.width(), img.height()),
            "quality": "auto",
            "background": "opaque",
            "output_format": self.fmt.name(),
        });
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        Some(
            Event::default()
                .event(format!("{}.{what}", self.kind))
                .data(data.to_string()),
        )
    }

    /// A preview of the codes drawn so far, when it is one of the `partial` evenly spaced ones.
    async fn preview(
        &mut self,
        output: usize,
        step: usize,
        total: usize,
        grid: (usize, usize),
        mut codes: Vec<u32>,
    ) -> Vec<Event> {
        if self.sent.len() <= output {
            self.sent.resize(output + 1, 0);
        }
        let k = self.sent[output];
        if k >= self.partial || step >= total || step * (self.partial + 1) < (k + 1) * total {
            return Vec::new();
        }
        self.sent[output] += 1;
        // rows not drawn yet: code 0
        codes.resize(grid.0 * grid.1, 0);
        let backend = self.backend.clone();
        let img =
            tokio::task::spawn_blocking(move || backend.decode_codes(&codes, grid.0, grid.1)).await;
        match img {
            Ok(Ok(img)) => self
                .event(
                    "partial_image",
                    &img,
                    json!({"partial_image_index": k, "image_index": output}),
                )
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.done {
            return None;
        }
        let ev = match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(e) => e,
            Err(_) => return Some(self.fail(&ApiError::timeout(self.timeout.as_secs_f64()))),
        };
        match ev {
            Some(JobEvent::Preview {
                output,
                step,
                total,
                grid,
                codes,
            }) => Some(self.preview(output, step, total, grid, codes).await),
            Some(JobEvent::Text { .. }) => Some(Vec::new()),
            Some(JobEvent::Done(Ok(outs))) => {
                self.done = true;
                let imgs: Vec<&RgbImage> = outs.iter().flat_map(|o| o.images()).collect();
                Some(
                    imgs.iter()
                        .enumerate()
                        .filter_map(|(i, img)| {
                            self.event("completed", img, json!({"image_index": i}))
                        })
                        .collect(),
                )
            }
            Some(JobEvent::Done(Err(e))) => Some(self.fail(&ApiError::from_core(&e, image_field))),
            None => Some(self.fail(&ApiError::unavailable("the model's engine stopped"))),
        }
    }

    fn fail(&mut self, e: &ApiError) -> Vec<Event> {
        self.done = true;
        let mut body = e.body();
        body["type"] = json!("error");
        vec![Event::default().event("error").data(body.to_string())]
    }
}

/// A kept image: its bytes, MIME type and when it was made.
type Kept = (Vec<u8>, &'static str, Instant);

/// Generated images kept for `url` answers: at most `cap` of them, each for `ttl`.
pub struct FileStore {
    /// The images by name, and their names oldest first.
    files: Mutex<(HashMap<String, Kept>, VecDeque<String>)>,
    cap: usize,
    ttl: Duration,
}

impl FileStore {
    /// A store of at most `cap` images kept `ttl` each.
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            files: Mutex::new((HashMap::new(), VecDeque::new())),
            cap,
            ttl,
        }
    }

    /// Keeps an image; returns its file name (an unguessable id plus the extension).
    pub fn put(&self, bytes: Vec<u8>, fmt: OutputFormat) -> String {
        let name = format!("{}.{}", crate::new_id("img-"), fmt.name());
        if let Ok(mut g) = self.files.lock() {
            let (map, order) = &mut *g;
            while order.len() >= self.cap.max(1) {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
            map.insert(name.clone(), (bytes, fmt.mime(), Instant::now()));
            order.push_back(name.clone());
        }
        name
    }

    fn get(&self, name: &str) -> Option<(Vec<u8>, &'static str)> {
        let g = self.files.lock().ok()?;
        let (bytes, mime, at) = g.0.get(name)?;
        (at.elapsed() < self.ttl).then(|| (bytes.clone(), *mime))
    }
}

/// `GET /v1/images/files/{name}`: an image of a `url` answer.
pub async fn file(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match st.files.get(&name) {
        Some((bytes, mime)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
        None => ApiError::not_found(format!("no image `{name}` (images are kept for an hour)"))
            .into_response(),
    }
}
