//! `POST /v1/chat/completions`, field for field: messages with `text` and `image_url` parts,
//! `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`, `n`,
//! `modalities`, `usage`, and `stream: true` as server-sent events ending in `[DONE]`
//! (`stream_options.include_usage` adds the usage chunk). Generated images (interleaved
//! families) come back in `message.images` as data URLs, each with the byte offset in `content`
//! where the model placed it; `content` stays a string.

use crate::engine::JobEvent;
use crate::error::{chat_field, ApiError, ApiResult};
use crate::media::{decode_image, image_url_bytes, OutputFormat};
use crate::{now_secs, parse_json, AppState, ModelEntry};
use any2any_core::{Generated, GenerationParams, ImageInput, Modality, Output, Request, Segment};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// The body of a chat completion request; any other field is refused (400 naming it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The model id, as listed by `/v1/models`.
    pub model: String,
    /// The conversation, oldest first; the last message is the user's.
    pub messages: Vec<Value>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// `{"include_usage": bool}` (with `stream` only).
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (older spelling).
    pub max_tokens: Option<i64>,
    /// Most tokens to generate.
    pub max_completion_tokens: Option<i64>,
    /// 0 to 2; 0 is greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, in (0, 1].
    pub top_p: Option<f32>,
    /// Extension: keep the k most likely tokens.
    pub top_k: Option<i64>,
    /// Seed of the draws (same seed, same answer).
    pub seed: Option<i64>,
    /// Up to 4 strings; the answer ends before the first one.
    pub stop: Option<Value>,
    /// Choices to generate.
    pub n: Option<i64>,
    /// An end-user id (accepted; not used).
    pub user: Option<String>,
    /// `["text"]`, `["image"]` or `["text", "image"]`.
    pub modalities: Option<Vec<String>>,
    /// Only 0 is honoured.
    pub frequency_penalty: Option<f32>,
    /// Only 0 is honoured.
    pub presence_penalty: Option<f32>,
    /// Only `false` is honoured.
    pub logprobs: Option<bool>,
    /// Only `{"type": "text"}` is honoured.
    pub response_format: Option<Value>,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and empty `choices`).
    pub include_usage: Option<bool>,
}

/// What a checked request becomes: the core request and how to shape its answer.
struct Plan {
    req: Request,
    stops: Vec<String>,
    max_tokens: Option<usize>,
    prompt_tokens: usize,
    stream: bool,
    include_usage: bool,
}

/// The handler.
pub async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    match serve(st, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(st: Arc<AppState>, body: Bytes) -> ApiResult<Response> {
    let cr: ChatRequest = parse_json(&body)?;
    let m = st.model(&cr.model)?;
    let plan = plan(&st, m, &cr)?;
    let deadline = Instant::now() + st.cfg.timeout;
    let mut rx = st.submit(m, plan.req.clone(), false, chat_field)?;
    let id = crate::new_id("chatcmpl-");
    if !plan.stream {
        let outs = crate::wait_outputs(&mut rx, deadline, st.cfg.timeout, chat_field).await?;
        return Ok(axum::Json(answer(&id, &cr.model, &plan, &outs)?).into_response());
    }
    // wait for the first event, so that an early failure is a plain error answer
    let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Some(JobEvent::Done(Err(e)))) => return Err(ApiError::from_core(&e, chat_field)),
        Ok(Some(ev)) => Some(ev),
        Ok(None) => return Err(ApiError::unavailable("the model's engine stopped")),
        Err(_) => return Err(ApiError::timeout(st.cfg.timeout.as_secs_f64())),
    };
    let stream = ChatStream::new(
        id,
        cr.model.clone(),
        plan,
        rx,
        first,
        deadline,
        st.cfg.timeout,
    );
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let evs = s.next_events().await?;
        Some((
            futures_util::stream::iter(evs.into_iter().map(Ok::<Event, Infallible>)),
            s,
        ))
    });
    let events = futures_util::StreamExt::flatten(events);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

fn as_count(v: Option<i64>, field: &str, max: usize) -> ApiResult<Option<usize>> {
    match v {
        None => Ok(None),
        Some(x) if x < 1 => Err(ApiError::invalid(
            field,
            format!("`{field}` is {x}; it must be ≥ 1"),
        )),
        Some(x) if x as u64 > max as u64 => Err(ApiError::invalid(
            field,
            format!("`{field}` is {x}; this server allows at most {max}"),
        )),
        Some(x) => Ok(Some(x as usize)),
    }
}

fn refuse_non_default(cr: &ChatRequest) -> ApiResult<()> {
    for (f, v) in [
        ("frequency_penalty", cr.frequency_penalty),
        ("presence_penalty", cr.presence_penalty),
    ] {
        if v.is_some_and(|x| x != 0.0) {
            return Err(ApiError::unsupported(
                f,
                "no family applies repetition penalties (only 0 is accepted)",
            ));
        }
    }
    if cr.logprobs == Some(true) {
        return Err(ApiError::unsupported(
            "logprobs",
            "log-probabilities are not returned",
        ));
    }
    if let Some(rf) = &cr.response_format {
        if rf.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                "only {\"type\": \"text\"} is honoured",
            ));
        }
    }
    if cr.stream_options.is_some() && cr.stream != Some(true) {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    Ok(())
}

fn plan(st: &AppState, m: &ModelEntry, cr: &ChatRequest) -> ApiResult<Plan> {
    refuse_non_default(cr)?;
    let lim = &st.cfg.limits;
    let max_tokens = match (cr.max_tokens, cr.max_completion_tokens) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "max_completion_tokens",
                "`max_tokens` and `max_completion_tokens` disagree; send one",
            ))
        }
        (a, None) => as_count(a, "max_tokens", lim.max_tokens)?,
        (_, b) => as_count(b, "max_completion_tokens", lim.max_tokens)?,
    };
    if let Some(t) = cr.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                format!("`temperature` is {t}; it must be in [0, 2]"),
            ));
        }
    }
    let n = as_count(cr.n, "n", lim.max_n)?.unwrap_or(1);
    let want = modality(cr.modalities.as_deref())?;
    let (segments, prompt_tokens) = render_messages(st, m, &cr.messages)?;
    let params = GenerationParams {
        temperature: cr.temperature,
        top_p: cr.top_p,
        top_k: as_count(cr.top_k, "top_k", usize::MAX)?,
        max_new_tokens: max_tokens,
        seed: cr.seed.map(|s| s as u64).unwrap_or_else(crate::fresh_seed),
        ..Default::default()
    };
    let mut req = Request::new().want(want).params(params).num_outputs(n);
    req.segments = segments;
    Ok(Plan {
        req,
        stops: stops(cr.stop.as_ref())?,
        max_tokens,
        prompt_tokens,
        stream: cr.stream == Some(true),
        include_usage: cr
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

fn modality(m: Option<&[String]>) -> ApiResult<Modality> {
    let Some(list) = m else {
        return Ok(Modality::Text);
    };
    let (mut text, mut image) = (false, false);
    for x in list {
        match x.as_str() {
            "text" => text = true,
            "image" => image = true,
            other => {
                return Err(ApiError::invalid(
                    "modalities",
                    format!("`{other}` is not a modality this server makes (text, image)"),
                ))
            }
        }
    }
    match (text, image) {
        (_, false) => Ok(Modality::Text),
        (false, true) => Ok(Modality::Image),
        (true, true) => Ok(Modality::Interleaved),
    }
}

fn stops(v: Option<&Value>) -> ApiResult<Vec<String>> {
    let list: Vec<String> = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::invalid("stop", "`stop` must be a string or an array of strings")
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    if list.len() > 4 || list.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` takes up to 4 non-empty strings",
        ));
    }
    Ok(list)
}

/// One message's parts as segments (text and decoded images).
fn message_parts(
    st: &AppState,
    i: usize,
    msg: &Value,
    role: &str,
    out: &mut Vec<Segment>,
) -> ApiResult<()> {
    let field = format!("messages[{i}].content");
    match msg.get("content") {
        Some(Value::String(s)) => out.push(Segment::Text(s.clone())),
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            ApiError::invalid(
                                format!("{pf}.text"),
                                "a text part needs a string `text`",
                            )
                        })?;
                        out.push(Segment::Text(t.to_string()));
                    }
                    Some("image_url") if role == "user" => {
                        out.push(Segment::Image(image_part(st, p, &pf)?))
                    }
                    Some("image_url") => {
                        return Err(ApiError::invalid(
                            pf,
                            format!("images are taken in user messages only, not {role}"),
                        ))
                    }
                    other => {
                        return Err(ApiError::invalid(
                            format!("{pf}.type"),
                            format!("part type {other:?} is not supported (text, image_url)"),
                        ))
                    }
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                field,
                "`content` must be a string or an array of parts",
            ))
        }
    }
    Ok(())
}

fn image_part(st: &AppState, p: &Value, pf: &str) -> ApiResult<ImageInput> {
    let field = format!("{pf}.image_url.url");
    let iu = p.get("image_url");
    let url = iu
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::invalid(field.clone(), "an image_url part needs `image_url.url`")
        })?;
    if let Some(d) = iu.and_then(|u| u.get("detail")).and_then(Value::as_str) {
        if d != "auto" {
            return Err(ApiError::unsupported(
                &format!("{pf}.image_url.detail"),
                "each family sizes images as its reference does (only \"auto\")",
            ));
        }
    }
    let lim = &st.cfg.limits;
    let bytes = image_url_bytes(url, lim, st.cfg.allowed_local_media.as_deref(), &field)?;
    Ok(ImageInput::new(
        decode_image(&bytes, lim, &field)?.to_rgb8(),
    ))
}

/// The conversation as the family's (single-turn) prompt: one user message is the prompt
/// itself; earlier turns are written before the last user message as `Role: text` lines.
/// Returns the segments and the prompt's token count (text tokens plus image tokens).
fn render_messages(
    st: &AppState,
    m: &ModelEntry,
    msgs: &[Value],
) -> ApiResult<(Vec<Segment>, usize)> {
    let Some(last) = msgs.last() else {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    };
    let role_of = |i: usize, v: &Value| -> ApiResult<String> {
        match v.get("role").and_then(Value::as_str) {
            Some(r @ ("system" | "developer" | "user" | "assistant")) => Ok(r.to_string()),
            other => Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("role {other:?} is not supported (system, developer, user, assistant)"),
            )),
        }
    };
    if role_of(msgs.len() - 1, last)? != "user" {
        return Err(ApiError::invalid(
            "messages",
            "the last message must be the user's",
        ));
    }
    let mut turns = Vec::new();
    for (i, msg) in msgs.iter().enumerate() {
        let role = role_of(i, msg)?;
        let mut parts = Vec::new();
        message_parts(st, i, msg, &role, &mut parts)?;
        turns.push((role, parts));
    }
    let segs = conversation_segments(turns);
    count_prompt(st, m, segs)
}

/// A conversation (role, parts; the last turn the user's) as one prompt for the family's
/// single-turn template: the last turn's parts as they are, each earlier turn before them as
/// `Role: parts` and a newline.
pub fn conversation_segments(turns: Vec<(String, Vec<Segment>)>) -> Vec<Segment> {
    let n = turns.len();
    let mut segs = Vec::new();
    for (i, (role, parts)) in turns.into_iter().enumerate() {
        let last = i + 1 == n;
        if !last {
            let mut label = role;
            if let Some(c) = label.get_mut(..1) {
                c.make_ascii_uppercase();
            }
            segs.push(Segment::Text(format!("{label}: ")));
        }
        segs.extend(parts);
        if !last {
            segs.push(Segment::Text("\n".into()));
        }
    }
    segs
}

fn count_prompt(
    st: &AppState,
    m: &ModelEntry,
    segs: Vec<Segment>,
) -> ApiResult<(Vec<Segment>, usize)> {
    let lim = &st.cfg.limits;
    let (mut chars, mut images, mut text) = (0usize, 0usize, String::new());
    for s in &segs {
        match s {
            Segment::Text(t) => {
                chars += t.chars().count();
                text.push_str(t);
            }
            Segment::Image(_) => images += 1,
            _ => {}
        }
    }
    let over = |n: usize, max: usize, what: &str| {
        ApiError::invalid(
            "messages",
            format!("the messages hold {n} {what}; this server takes at most {max}"),
        )
    };
    if chars > lim.max_prompt_chars {
        return Err(
            over(chars, lim.max_prompt_chars, "characters").with_code("context_length_exceeded")
        );
    }
    if images > lim.max_images {
        return Err(over(images, lim.max_images, "images"));
    }
    let text_tokens = m
        .backend
        .tokenizer()
        .and_then(|t| t.encode(text.as_str(), false).ok())
        .map(|e| e.len())
        .unwrap_or(0);
    let per_image = m.info.image_tokens.map(|(h, w)| h * w).unwrap_or(0);
    Ok((segs, text_tokens + images * per_image))
}

/// Ends text before the first stop string, holding back a tail that may begin one.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
    /// Every byte pushed so far.
    pub seen: String,
    /// Whether a stop string was met.
    pub stopped: bool,
    /// Bytes given out.
    pub emitted: usize,
}

impl StopFilter {
    /// A filter for `stops` (none: text passes as it comes).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.to_vec(),
            ..Default::default()
        }
    }

    /// Takes new text; returns what can be sent now.
    pub fn push(&mut self, t: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.seen.push_str(t);
        self.held.push_str(t);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(pos) = hit {
            self.stopped = true;
            let out = self.held[..pos].to_string();
            self.held.clear();
            self.emitted += out.len();
            return out;
        }
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len()).filter(|&k| s.is_char_boundary(k) && self.held.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out: String = self.held.drain(..cut).collect();
        self.emitted += out.len();
        out
    }

    /// The held-back tail, at the end of the answer.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let out = std::mem::take(&mut self.held);
        self.emitted += out.len();
        out
    }
}

/// The text of an output, its token count and its images with their byte offset in the text.
fn pieces(o: &Output) -> (String, usize, Vec<(usize, &image::RgbImage)>) {
    let (mut text, mut tokens, mut images) = (String::new(), 0, Vec::new());
    for s in &o.segments {
        match s {
            Generated::Text { ids, text: t } => {
                tokens += ids.len();
                text.push_str(t.as_deref().unwrap_or(""));
            }
            Generated::Image { image, .. } => images.push((text.len(), image)),
            _ => {}
        }
    }
    (text, tokens, images)
}

fn images_json(images: &[(usize, &image::RgbImage)], content_len: usize) -> ApiResult<Vec<Value>> {
    images
        .iter()
        .enumerate()
        .map(|(i, (at, img))| {
            Ok(json!({
                "type": "image_url",
                "index": i,
                "text_offset": (*at).min(content_len),
                "image_url": {"url": OutputFormat::Png.data_url(img)?},
            }))
        })
        .collect()
}

fn finish_reason(stopped: bool, tokens: usize, max: Option<usize>) -> &'static str {
    match (stopped, max) {
        (false, Some(m)) if tokens >= m => "length",
        _ => "stop",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn answer(id: &str, model: &str, plan: &Plan, outs: &[Output]) -> ApiResult<Value> {
    let mut choices = Vec::new();
    let mut completion = 0;
    for (i, o) in outs.iter().enumerate() {
        let (text, tokens, images) = pieces(o);
        completion += tokens;
        let mut f = StopFilter::new(&plan.stops);
        let mut content = f.push(&text);
        content.push_str(&f.finish());
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if !images.is_empty() {
            message["images"] = Value::Array(images_json(&images, content.len())?);
        }
        choices.push(json!({
            "index": i,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(f.stopped, tokens, plan.max_tokens),
        }));
    }
    Ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage(plan.prompt_tokens, completion),
    }))
}

/// The state of one streamed answer.
struct ChatStream {
    id: String,
    model: String,
    created: u64,
    plan: Plan,
    rx: UnboundedReceiver<JobEvent>,
    first: Option<JobEvent>,
    filters: Vec<StopFilter>,
    started: bool,
    done: bool,
    deadline: Instant,
    timeout: Duration,
}

impl ChatStream {
    fn new(
        id: String,
        model: String,
        plan: Plan,
        rx: UnboundedReceiver<JobEvent>,
        first: Option<JobEvent>,
        deadline: Instant,
        timeout: Duration,
    ) -> Self {
        let filters = (0..plan.req.num_outputs)
            .map(|_| StopFilter::new(&plan.stops))
            .collect();
        Self {
            id,
            model,
            created: now_secs(),
            plan,
            rx,
            first,
            filters,
            started: false,
            done: false,
            deadline,
            timeout,
        }
    }

    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Event {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if self.plan.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Event::default().data(c.to_string())
    }

    fn delta(&self, i: usize, delta: Value, finish: Option<&str>) -> Event {
        self.chunk(
            vec![json!({"index": i, "delta": delta, "logprobs": null, "finish_reason": finish})],
            None,
        )
    }

    /// The next events to send; `None` once the stream has ended.
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.done {
            return None;
        }
        let mut evs = Vec::new();
        if !self.started {
            self.started = true;
            for i in 0..self.filters.len() {
                evs.push(self.delta(i, json!({"role": "assistant", "content": ""}), None));
            }
        }
        let ev = match self.first.take() {
            Some(e) => Some(e),
            None => match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
                Ok(e) => e,
                Err(_) => {
                    return Some(self.fail(evs, &ApiError::timeout(self.timeout.as_secs_f64())))
                }
            },
        };
        match ev {
            Some(JobEvent::Text { output, text }) => {
                if let Some(f) = self.filters.get_mut(output) {
                    let t = f.push(&text);
                    if !t.is_empty() {
                        evs.push(self.delta(output, json!({"content": t}), None));
                    }
                }
                Some(evs)
            }
            Some(JobEvent::Preview { .. }) => Some(evs),
            Some(JobEvent::Done(Ok(outs))) => Some(self.finish(evs, &outs)),
            Some(JobEvent::Done(Err(e))) => {
                Some(self.fail(evs, &ApiError::from_core(&e, chat_field)))
            }
            None => Some(self.fail(evs, &ApiError::unavailable("the model's engine stopped"))),
        }
    }

    fn fail(&mut self, mut evs: Vec<Event>, e: &ApiError) -> Vec<Event> {
        self.done = true;
        evs.push(Event::default().data(e.body().to_string()));
        evs.push(Event::default().data("[DONE]"));
        evs
    }

    fn finish(&mut self, mut evs: Vec<Event>, outs: &[Output]) -> Vec<Event> {
        self.done = true;
        let mut completion = 0;
        for (i, o) in outs.iter().enumerate() {
            let (text, tokens, images) = pieces(o);
            completion += tokens;
            let Some(f) = self.filters.get_mut(i) else {
                continue;
            };
            // text a family did not stream arrives with the output
            let mut tail = match text.strip_prefix(f.seen.as_str()) {
                Some(rest) if !rest.is_empty() => f.push(rest),
                _ => String::new(),
            };
            tail.push_str(&f.finish());
            let (stopped, emitted) = (f.stopped, f.emitted);
            if !tail.is_empty() {
                evs.push(self.delta(i, json!({"content": tail}), None));
            }
            if !images.is_empty() {
                match images_json(&images, emitted) {
                    Ok(v) => evs.push(self.delta(i, json!({"images": v}), None)),
                    Err(e) => return self.fail(evs, &e),
                }
            }
            let reason = finish_reason(stopped, tokens, self.plan.max_tokens);
            evs.push(self.delta(i, json!({}), Some(reason)));
        }
        if self.plan.include_usage {
            evs.push(self.chunk(Vec::new(), Some(usage(self.plan.prompt_tokens, completion))));
        }
        evs.push(Event::default().data("[DONE]"));
        evs
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], parts: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = String::new();
        for p in parts {
            out.push_str(&f.push(p));
        }
        out.push_str(&f.finish());
        (out, f.stopped)
    }

    #[test]
    fn a_stop_string_split_over_deltas_ends_the_text_before_it() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(
            run(&["END"], &["hello E", "NX"]),
            ("hello ENX".into(), false)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["b", "a"], &["xab"]), ("x".into(), true));
    }
}
