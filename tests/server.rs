//! `any2any-server` over real loopback HTTP on the tiny fixtures: every route, the SSE
//! transcript, answers equal to the core's for the same seed, batching equal to sequential,
//! disconnects, timeouts, the full queue and every error path of the envelope.

mod common;
use any2any::{GenerationParams, ImageInput, Modality, Pipeline, Request};
use any2any_server::{RunningServer, ServedModel, ServerConfig};
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

const JANUS: &str = "janus";
const SHOWO: &str = "showo";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn cfg() -> ServerConfig {
    ServerConfig {
        port: 0,
        batch_window: Duration::from_millis(1),
        ..ServerConfig::default()
    }
}

/// Show-o's tiny fixture has no tokenizer.json: a copy with a word-level one (ids < its text
/// vocabulary of 100) so that text prompts work.
fn showo_with_tokenizer() -> tempfile::TempDir {
    let src = fixture_dir("showo-tiny");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let mag = dir.path().join("magvit");
    std::fs::create_dir(&mag).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join("magvit").join(f), mag.join(f)).unwrap();
    }
    let words = [
        "[UNK]", "a", "cat", "dog", "red", "blue", "fox", "in", "snow", "paint", "the", "sky",
    ];
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i + 1)))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

fn load(dir: &Path) -> Pipeline {
    Pipeline::load(dir.to_str().unwrap(), Default::default()).unwrap()
}

fn start_with(cfg: ServerConfig, models: &[(&str, &Path)]) -> RunningServer {
    let models = models
        .iter()
        .map(|(id, dir)| ServedModel {
            id: id.to_string(),
            backend: load(dir).into_backend(),
        })
        .collect();
    any2any_server::spawn(cfg, models).unwrap()
}

/// A backend that sleeps `ms` at every step of its loops (cancellation still checked at each),
/// so that a test can be sure a request is still running.
struct Slow {
    inner: Box<dyn any2any::Backend>,
    ms: u64,
}

impl any2any::Backend for Slow {
    fn info(&self) -> any2any::ModelInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> any2any::backend::Capabilities {
        self.inner.capabilities()
    }
    fn check(&self, r: &Request) -> any2any::Result<()> {
        self.inner.check(r)
    }
    fn same_group(&self, a: &Request, b: &Request) -> bool {
        self.inner.same_group(a, b)
    }
    fn generate_group(
        &self,
        reqs: &[&Request],
        hooks: &mut any2any::Hooks,
    ) -> any2any::Result<Vec<any2any::Output>> {
        let mut old = hooks.progress.take();
        let ms = self.ms;
        hooks.progress = Some(Box::new(move |p| {
            std::thread::sleep(Duration::from_millis(ms));
            if let Some(f) = old.as_mut() {
                f(p)
            }
        }));
        self.inner.generate_group(reqs, hooks)
    }
    fn tokenizer(&self) -> Option<&any2any::tokenizers::Tokenizer> {
        self.inner.tokenizer()
    }
}

fn start_slow_janus(cfg: ServerConfig) -> RunningServer {
    let backend = Box::new(Slow {
        inner: load_janus().into_backend(),
        ms: 50,
    });
    any2any_server::spawn(
        cfg,
        vec![ServedModel {
            id: JANUS.into(),
            backend,
        }],
    )
    .unwrap()
}

fn start_janus(cfg: ServerConfig) -> RunningServer {
    start_with(cfg, &[(JANUS, &janus_dir())])
}

fn url(s: &RunningServer, path: &str) -> String {
    format!("http://{}{path}", s.addr)
}

/// (status, body, Retry-After) of a request; errors are answers too.
fn call(r: Result<ureq::Response, ureq::Error>) -> (u16, String, Option<String>) {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let retry = r.header("retry-after").map(str::to_string);
    (r.status(), r.into_string().unwrap(), retry)
}

fn post(s: &RunningServer, path: &str, body: &Value) -> (u16, Value) {
    let (st, b, _) = call(
        ureq::post(&url(s, path))
            .set("content-type", "application/json")
            .send_string(&body.to_string()),
    );
    (
        st,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
    )
}

fn get(s: &RunningServer, path: &str) -> (u16, String) {
    let (st, b, _) = call(ureq::get(&url(s, path)).call());
    (st, b)
}

#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, param: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let e = &got.1["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
    assert!(e["type"].is_string(), "{}", got.1);
    assert!(e.get("code").is_some(), "{}", got.1);
    assert_eq!(e["param"].as_str().unwrap_or(""), param, "{}", got.1);
}

fn chat_body(prompt: &str, seed: u64, max: usize) -> Value {
    json!({"model": JANUS, "messages": [{"role": "user", "content": prompt}],
           "max_tokens": max, "temperature": 1.0, "seed": seed})
}

fn text_req(prompt: &str, seed: u64, max: usize) -> Request {
    Request::new()
        .text(prompt)
        .want(Modality::Text)
        .params(GenerationParams {
            temperature: Some(1.0),
            max_new_tokens: Some(max),
            seed,
            ..Default::default()
        })
}

fn core_text(pipe: &Pipeline, req: Request) -> Vec<String> {
    pipe.generate_batch(&[req], &mut Default::default())
        .unwrap()
        .iter()
        .map(|o| o.text())
        .collect()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn models_health_ready_metrics_openapi_and_the_page() {
    let showo = showo_with_tokenizer();
    let s = start_with(cfg(), &[(JANUS, &janus_dir()), (SHOWO, showo.path())]);
    let (st, b) = get(&s, "/v1/models");
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["object"], "list");
    let caps = |i: usize| v["data"][i]["capabilities"].clone();
    assert_eq!(v["data"][0]["id"], JANUS);
    assert_eq!(caps(0), json!(["text", "image_in", "image_out"]));
    assert_eq!(v["data"][1]["id"], SHOWO);
    assert_eq!(caps(1), json!(["image_in", "image_out", "edit"]));
    let (st, b) = get(&s, "/v1/models/showo");
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&b).unwrap()["family"].clone()
        ),
        (200, json!("showo"))
    );
    let (st, b) = get(&s, "/v1/models/nope");
    assert_eq!(st, 404, "{b}");
    assert_eq!(get(&s, "/health").0, 200);
    let (st, b) = get(&s, "/ready");
    assert_eq!(st, 200);
    assert!(b.contains("ready"), "{b}");
    let (st, b) = get(&s, "/nowhere");
    assert_eq!(st, 404);
    assert!(serde_json::from_str::<Value>(&b).unwrap()["error"]["message"].is_string());
    post(&s, "/v1/chat/completions", &chat_body("hi", 1, 2));
    let (st, m) = get(&s, "/metrics");
    assert_eq!(st, 200);
    for name in [
        "any2any_queue_depth{model=\"janus\"} 0",
        "any2any_batch_size_count{model=\"janus\"} 1",
        "any2any_generated_tokens_total{model=\"janus\"} 2",
        "any2any_time_to_first_token_seconds_count{model=\"janus\"} 1",
        "any2any_tokens_per_second{model=\"janus\"}",
        "any2any_seconds_per_image_count{model=\"showo\"} 0",
        "any2any_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
    ] {
        assert!(m.contains(name), "{name} not in\n{m}");
    }
    let (st, page) = get(&s, "/");
    assert_eq!(st, 200);
    assert!(
        page.contains("<html") && page.contains("/v1/images/generations"),
        "{page}"
    );
}

#[test]
fn openapi_document_lists_every_route_with_its_schemas() {
    let s = start_janus(cfg());
    let (st, raw_doc) = get(&s, "/openapi.json");
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_str(&raw_doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/models", "get"),
        ("/v1/models/{id}", "get"),
        ("/v1/chat/completions", "post"),
        ("/v1/images/generations", "post"),
        ("/v1/images/edits", "post"),
        ("/v1/images/files/{name}", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    // every request field a handler takes is in the schema, and no other
    let chat = &doc["components"]["schemas"]["ChatCompletionRequest"]["properties"];
    for f in [
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "n",
        "user",
        "modalities",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "response_format",
    ] {
        assert!(chat[f].is_object(), "chat field {f}");
    }
    assert_eq!(chat.as_object().unwrap().len(), 18);
    let img = &doc["components"]["schemas"]["ImageGenerationRequest"]["properties"];
    assert_eq!(img.as_object().unwrap().len(), 19, "{img}");
    // the server takes each documented field (null: "not set") and refuses any other
    let unknown = |v: &(u16, Value)| {
        v.1["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("does not honour")
    };
    for f in chat
        .as_object()
        .unwrap()
        .keys()
        .filter(|f| !["model", "messages"].contains(&f.as_str()))
    {
        let mut b = chat_body("hi", 1, 1);
        b[f] = Value::Null;
        assert!(
            !unknown(&post(&s, "/v1/chat/completions", &b)),
            "chat field {f} refused"
        );
    }
    for f in img.as_object().unwrap().keys().filter(|f| *f != "prompt") {
        let mut b = json!({"model": JANUS, "prompt": "a cat"});
        b[f] = Value::Null;
        assert!(
            !unknown(&post(&s, "/v1/images/generations", &b)),
            "image field {f} refused"
        );
    }
    let mut b = chat_body("hi", 1, 1);
    b["tools"] = json!([]);
    assert!(unknown(&post(&s, "/v1/chat/completions", &b)));
    // $refs resolve
    for r in raw_doc.split("\"$ref\":").skip(1) {
        let name = r.trim().trim_start_matches('"').split('"').next().unwrap();
        let key = name.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][key].is_object(),
            "dangling $ref {name}"
        );
    }
}

#[test]
fn chat_answers_equal_the_core_with_the_same_seed_and_n() {
    let s = start_janus(cfg());
    let pipe = load_janus();
    let mut body = chat_body("hello there", 7, 6);
    body["n"] = json!(2);
    let (st, v) = post(&s, "/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    let want = core_text(&pipe, text_req("hello there", 7, 6).num_outputs(2));
    let got: Vec<String> = (0..2)
        .map(|i| {
            v["choices"][i]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let u = &v["usage"];
    assert_eq!(u["completion_tokens"], 12, "{u}");
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + 12)
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // greedy: temperature 0 is honoured (two seeds, one answer)
    let g = |seed| {
        let mut b = chat_body("hello there", seed, 5);
        b["temperature"] = json!(0.0);
        post(&s, "/v1/chat/completions", &b).1["choices"][0]["message"]["content"].clone()
    };
    assert_eq!(g(1), g(2));
    // max_completion_tokens is max_tokens
    let mut b = chat_body("hello there", 7, 6);
    b.as_object_mut().unwrap().remove("max_tokens");
    b["max_completion_tokens"] = json!(6);
    let alone = core_text(&pipe, text_req("hello there", 7, 6));
    assert_eq!(
        post(&s, "/v1/chat/completions", &b).1["choices"][0]["message"]["content"],
        json!(alone[0])
    );
}

#[test]
fn chat_with_an_image_data_url_equals_the_core() {
    let s = start_janus(cfg());
    let png = std::fs::read(janus_dir().join("image.png")).unwrap();
    let data = format!("data:image/png;base64,{}", b64().encode(&png));
    let body = json!({"model": JANUS, "max_tokens": 5, "seed": 3, "temperature": 1.0,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data, "detail": "auto"}},
            {"type": "text", "text": "what is this?"}]}]});
    let (st, v) = post(&s, "/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    let req = Request::new()
        .image(ImageInput::new(img))
        .text("what is this?")
        .want(Modality::Text)
        .params(GenerationParams {
            temperature: Some(1.0),
            max_new_tokens: Some(5),
            seed: 3,
            ..Default::default()
        });
    assert_eq!(
        v["choices"][0]["message"]["content"],
        json!(core_text(&load_janus(), req)[0])
    );
    // janus-tiny has 16 image tokens: they are counted in the prompt
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 16, "{v}");
}

/// Reads an SSE answer (status 200) to its end.
fn stream(s: &RunningServer, body: &Value) -> Vec<Value> {
    let r = ureq::post(&url(s, "/v1/chat/completions"))
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.into_string().unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn streaming_transcript_adds_up_to_the_answer_and_ends_with_usage_and_done() {
    let s = start_janus(cfg());
    let mut body = chat_body("tell me", 11, 8);
    let full = post(&s, "/v1/chat/completions", &body).1;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = stream(&s, &body);
    let id = chunks[0]["id"].clone();
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0)).collect();
    let text: String = deltas
        .iter()
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    assert_eq!(json!(text), full["choices"][0]["message"]["content"]);
    assert!(deltas.len() >= 4, "text came in one piece: {chunks:?}");
    let last = deltas.last().unwrap();
    assert_eq!(last["finish_reason"], "length");
    assert_eq!(last["delta"], json!({}));
    // every chunk but the last has usage null; the last has empty choices and the usage
    let (tail, rest) = chunks.split_last().unwrap();
    assert!(rest.iter().all(|c| c["usage"].is_null()));
    assert_eq!(tail["choices"], json!([]));
    assert_eq!(tail["usage"], full["usage"]);
    // without include_usage there is no usage at all
    body.as_object_mut().unwrap().remove("stream_options");
    let chunks = stream(&s, &body);
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty()));
}

#[test]
fn stop_strings_end_the_answer_streamed_or_not() {
    let s = start_janus(cfg());
    let mut body = chat_body("stop here", 5, 12);
    let full = post(&s, "/v1/chat/completions", &body).1["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(full.chars().count() >= 6, "{full:?}");
    let stop: String = full.chars().skip(3).take(2).collect();
    let want = &full[..full.find(&stop).unwrap()];
    body["stop"] = json!([stop, "never-there"]);
    let v = post(&s, "/v1/chat/completions", &body).1;
    assert_eq!(v["choices"][0]["message"]["content"], json!(want));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let chunks = stream(&s, &body);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[test]
fn concurrent_requests_are_batched_and_each_equals_its_answer_alone() {
    let s = start_janus(ServerConfig {
        batch_window: Duration::from_millis(300),
        ..cfg()
    });
    let pipe = load_janus();
    let prompts = ["a fox", "the snow is deep", "hello", "one more prompt here"];
    let handles: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let u = url(&s, "/v1/chat/completions");
            let b = chat_body(p, 100 + i as u64, 4 + i);
            std::thread::spawn(move || {
                let r = ureq::post(&u).send_string(&b.to_string()).unwrap();
                serde_json::from_str::<Value>(&r.into_string().unwrap()).unwrap()
            })
        })
        .collect();
    let got: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, p) in prompts.iter().enumerate() {
        let alone = core_text(&pipe, text_req(p, 100 + i as u64, 4 + i));
        assert_eq!(
            got[i]["choices"][0]["message"]["content"],
            json!(alone[0]),
            "prompt {i}"
        );
    }
    let m = get(&s, "/metrics").1;
    let line = |pfx: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(pfx))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let batches = line("any2any_batch_size_count{model=\"janus\"}");
    let rows = line("any2any_batch_size_sum{model=\"janus\"}");
    assert_eq!(rows, 4.0, "{m}");
    assert!(batches < 4.0, "no two requests shared a batch:\n{m}");
}

/// Sends a raw HTTP/1.1 request and returns the open stream.
fn raw(s: &RunningServer, path: &str, body: &Value) -> std::net::TcpStream {
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    let b = body.to_string();
    write!(c, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
    c
}

fn metric(s: &RunningServer, name: &str) -> f64 {
    let m = get(s, "/metrics").1;
    m.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_client_that_disconnects_cancels_its_generation_and_the_server_stays_up() {
    let s = start_slow_janus(cfg());
    let mut body = chat_body("a long answer", 1, 300);
    body["stream"] = json!(true);
    let c = raw(&s, "/v1/chat/completions", &body);
    let mut r = BufReader::new(c);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    drop(r);
    let t0 = std::time::Instant::now();
    while metric(&s, "any2any_cancelled_total{model=\"janus\"}") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the generation was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // a non-streamed request whose client leaves is cancelled too
    let c = raw(
        &s,
        "/v1/chat/completions",
        &chat_body("a long answer", 2, 300),
    );
    std::thread::sleep(Duration::from_millis(50));
    drop(c);
    while metric(&s, "any2any_cancelled_total{model=\"janus\"}") < 2.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the non-streamed generation was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric(&s, "any2any_generated_tokens_total{model=\"janus\"}"),
        0.0
    );
    let (st, v) = post(&s, "/v1/chat/completions", &chat_body("still there?", 1, 3));
    assert_eq!(st, 200, "{v}");
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_slow_requests_time_out() {
    let s = start_slow_janus(ServerConfig {
        max_queue: 1,
        max_batch: 1,
        batch_window: Duration::ZERO,
        ..cfg()
    });
    let slow = chat_body("a long answer", 1, 300);
    let busy = raw(&s, "/v1/chat/completions", &slow);
    std::thread::sleep(Duration::from_millis(150));
    let queued = raw(&s, "/v1/chat/completions", &slow);
    std::thread::sleep(Duration::from_millis(150));
    let (st, b, retry) =
        call(ureq::post(&url(&s, "/v1/chat/completions")).send_string(&slow.to_string()));
    assert_eq!(st, 429, "{b}");
    assert_eq!(retry.as_deref(), Some("1"));
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["error"]["code"], "queue_full");
    drop((busy, queued));

    let s = start_slow_janus(ServerConfig {
        timeout: Duration::from_millis(200),
        ..cfg()
    });
    let got = post(&s, "/v1/chat/completions", &slow);
    assert_error(&got, 504, "");
    assert_eq!(got.1["error"]["code"], "timeout");
}

#[test]
fn images_generations_equal_the_core_as_b64_json_and_url() {
    let s = start_janus(cfg());
    let body = json!({"model": JANUS, "prompt": "a red fox", "n": 2, "seed": 9, "size": "16x16",
                      "guidance_scale": 3.0, "temperature": 1.0});
    let (st, v) = post(&s, "/v1/images/generations", &body);
    assert_eq!(st, 200, "{v}");
    let req = Request::new()
        .text("a red fox")
        .want(Modality::Image)
        .num_outputs(2)
        .params(GenerationParams {
            cfg: Some(3.0),
            temperature: Some(1.0),
            seed: 9,
            ..Default::default()
        });
    let outs = load_janus()
        .generate_batch(&[req], &mut Default::default())
        .unwrap();
    for (i, o) in outs.iter().enumerate() {
        let png = b64()
            .decode(v["data"][i]["b64_json"].as_str().unwrap())
            .unwrap();
        let got = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(&got, o.images()[0], "image {i}");
    }
    assert_ne!(v["data"][0], v["data"][1]);
    assert_eq!(v["size"], "16x16");
    // url: a link this server serves
    let mut b = body.clone();
    b["response_format"] = json!("url");
    b["n"] = json!(1);
    b["output_format"] = json!("webp");
    let v = post(&s, "/v1/images/generations", &b).1;
    let link = v["data"][0]["url"].as_str().unwrap();
    assert!(link.ends_with(".webp"), "{link}");
    let r = ureq::get(link).call().unwrap();
    assert_eq!(r.header("content-type"), Some("image/webp"));
    let mut bytes = Vec::new();
    r.into_reader().read_to_end(&mut bytes).unwrap();
    let one = Request::new()
        .text("a red fox")
        .want(Modality::Image)
        .params(GenerationParams {
            cfg: Some(3.0),
            temperature: Some(1.0),
            seed: 9,
            ..Default::default()
        });
    assert_eq!(
        &image::load_from_memory(&bytes).unwrap().to_rgb8(),
        load_janus().generate(one).unwrap().images()[0]
    );
    assert_eq!(get(&s, "/v1/images/files/img-0.png").0, 404);
}

#[test]
fn streamed_images_send_partial_previews_then_the_completed_image() {
    let s = start_janus(cfg());
    let body = json!({"model": JANUS, "prompt": "a red fox", "seed": 5, "temperature": 1.0});
    let whole = post(&s, "/v1/images/generations", &body).1;
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["partial_images"] = json!(2);
    let r = ureq::post(&url(&s, "/v1/images/generations"))
        .send_string(&sb.to_string())
        .unwrap();
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.into_string().unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "image_generation.partial_image",
            "image_generation.partial_image",
            "image_generation.completed"
        ],
        "{text}"
    );
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["partial_image_index"], 0);
    assert_eq!(events[1]["partial_image_index"], 1);
    assert_eq!(events[2]["type"], "image_generation.completed");
    assert_eq!(events[2]["b64_json"], whole["data"][0]["b64_json"]);
    let decode = |e: &Value| {
        image::load_from_memory(&b64().decode(e["b64_json"].as_str().unwrap()).unwrap())
            .unwrap()
            .to_rgb8()
    };
    let (p0, p1, done) = (decode(&events[0]), decode(&events[1]), decode(&events[2]));
    assert_eq!(p0.dimensions(), done.dimensions());
    // two different previews (the rows not drawn yet are code 0), neither the final image
    assert!(p0 != done && p1 != done && p0 != p1);
    // without partial_images: only the completed event
    sb["partial_images"] = json!(0);
    let text = ureq::post(&url(&s, "/v1/images/generations"))
        .send_string(&sb.to_string())
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("event: ")).count(),
        1,
        "{text}"
    );
}

/// A multipart body of (name, filename, bytes) parts.
fn multipart(parts: &[(&str, Option<&str>, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "any2anyBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if let Some(f) = file {
            write!(body, "; filename=\"{f}\"\r\nContent-Type: image/png").unwrap();
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn png(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn edit(s: &RunningServer, parts: &[(&str, Option<&str>, Vec<u8>)]) -> (u16, Value) {
    let (ct, body) = multipart(parts);
    let (st, b, _) = call(
        ureq::post(&url(s, "/v1/images/edits"))
            .set("content-type", &ct)
            .send_bytes(&body),
    );
    (
        st,
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
    )
}

#[test]
fn edits_take_openai_alpha_masks_and_grey_masks_and_equal_the_core() {
    let showo = showo_with_tokenizer();
    let s = start_with(cfg(), &[(SHOWO, showo.path()), (JANUS, &janus_dir())]);
    let image_png = std::fs::read(fixture_dir("showo-tiny").join("edit_image.png")).unwrap();
    let img = image::load_from_memory(&image_png).unwrap().to_rgb8();
    // a binary mask: the right half regenerated
    let (w, h) = img.dimensions();
    let grey =
        image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x >= w / 2 { 255 } else { 0 }]));
    let alpha = image::RgbaImage::from_fn(w, h, |x, _| {
        image::Rgba([9, 9, 9, if x >= w / 2 { 0 } else { 255 }])
    });
    let fields = |mask: Vec<u8>| {
        vec![
            ("model", None, SHOWO.as_bytes().to_vec()),
            ("prompt", None, b"a red fox".to_vec()),
            ("seed", None, b"4".to_vec()),
            ("steps", None, b"3".to_vec()),
            ("image", Some("image.png"), image_png.clone()),
            ("mask", Some("mask.png"), mask),
        ]
    };
    let a = edit(&s, &fields(png(&image::DynamicImage::ImageRgba8(alpha))));
    assert_eq!(a.0, 200, "{}", a.1);
    let g = edit(
        &s,
        &fields(png(&image::DynamicImage::ImageLuma8(grey.clone()))),
    );
    assert_eq!(a.1["data"], g.1["data"]);
    let req = Request::new()
        .image(ImageInput::new(img.clone()).with_mask(grey).unwrap())
        .text("a red fox")
        .want(Modality::Image)
        .params(GenerationParams {
            steps: Some(3),
            seed: 4,
            ..Default::default()
        });
    let want = load(showo.path()).generate(req).unwrap();
    let got = b64()
        .decode(a.1["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        &image::load_from_memory(&got).unwrap().to_rgb8(),
        want.images()[0]
    );
    // a family without edits, a mask of another size, no image
    let mut f = fields(png(&image::DynamicImage::ImageRgba8(
        image::RgbaImage::new(w, h),
    )));
    f[0].2 = JANUS.as_bytes().to_vec();
    f[3] = ("temperature", None, b"1".to_vec());
    assert_error(&edit(&s, &f), 400, "model");
    let mut f = fields(png(&image::DynamicImage::ImageLuma8(
        image::GrayImage::new(3, 3),
    )));
    assert_error(&edit(&s, &f), 400, "mask");
    f.truncate(4);
    assert_error(&edit(&s, &f), 400, "image");
    f.push(("input_fidelity", None, b"high".to_vec()));
    assert_error(&edit(&s, &f), 400, "input_fidelity");
}

#[test]
fn bad_requests_get_a_4xx_naming_the_field_and_the_server_stays_up() {
    let s = start_with(
        ServerConfig {
            limits: any2any_server::Limits {
                max_body_bytes: 200_000,
                max_image_pixels: 4096,
                ..Default::default()
            },
            ..cfg()
        },
        &[(JANUS, &janus_dir())],
    );
    let chat = |patch: Value| {
        let mut b = chat_body("hi", 1, 3);
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        post(&s, "/v1/chat/completions", &b)
    };
    assert_error(&chat(json!({"logit_bias": {"1": 2}})), 400, "logit_bias");
    assert_error(&chat(json!({"temperature": 3.5})), 400, "temperature");
    assert_error(&chat(json!({"top_p": 0.0})), 400, "top_p");
    assert_error(&chat(json!({"max_tokens": 100000})), 400, "max_tokens");
    assert_error(&chat(json!({"max_tokens": 0})), 400, "max_tokens");
    assert_error(&chat(json!({"n": 11})), 400, "n");
    assert_error(
        &chat(json!({"frequency_penalty": 0.5})),
        400,
        "frequency_penalty",
    );
    assert_error(
        &chat(json!({"stop": ["a", "b", "c", "d", "e"]})),
        400,
        "stop",
    );
    assert_error(
        &chat(json!({"stream_options": {"include_usage": true}})),
        400,
        "stream_options",
    );
    assert_error(&chat(json!({"modalities": ["audio"]})), 400, "modalities");
    assert_error(&chat(json!({"model": "gpt-4"})), 404, "model");
    assert_error(&chat(json!({"messages": []})), 400, "messages");
    assert_error(
        &chat(json!({"messages": [{"role": "tool", "content": "x"}]})),
        400,
        "messages[0].role",
    );
    assert_error(
        &chat(json!({"messages": [{"role": "assistant", "content": "x"}]})),
        400,
        "messages",
    );
    assert_error(
        &chat(json!({"messages": [{"role": "user", "content": "x ".repeat(20_000)}]})),
        400,
        "messages",
    );
    let part = |url: &str| json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]});
    let f = "messages[0].content[0].image_url.url";
    assert_error(&chat(part("https://example.com/cat.png")), 400, f);
    assert_error(&chat(part("file:///etc/passwd")), 400, f);
    assert_error(&chat(part("data:image/png;base64,%%%")), 400, f);
    assert_error(&chat(part("data:image/png;base64,aGVsbG8=")), 400, f);
    // 100×100 = 10000 pixels, over this server's 4096
    let big = png(&image::DynamicImage::new_rgb8(100, 100));
    assert_error(
        &chat(part(&format!(
            "data:image/png;base64,{}",
            b64().encode(big)
        ))),
        400,
        f,
    );
    // images on Janus take no steps; text takes no guidance
    assert_error(
        &chat(json!({"messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]})),
        400,
        "messages[0].content[0].type",
    );
    let img = |patch: Value| {
        let mut b = json!({"model": JANUS, "prompt": "a cat"});
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        post(&s, "/v1/images/generations", &b)
    };
    assert_error(&img(json!({"steps": 10})), 400, "steps");
    assert_error(
        &img(json!({"negative_prompt": "dull"})),
        400,
        "negative_prompt",
    );
    assert_error(&img(json!({"size": "512x512"})), 400, "size");
    assert_error(&img(json!({"size": "big"})), 400, "size");
    assert_error(&img(json!({"n": 0})), 400, "n");
    assert_error(
        &img(json!({"response_format": "png"})),
        400,
        "response_format",
    );
    assert_error(&img(json!({"output_format": "gif"})), 400, "output_format");
    assert_error(&img(json!({"quality": "hd"})), 400, "quality");
    assert_error(&img(json!({"partial_images": 2})), 400, "partial_images");
    assert_error(
        &img(json!({"stream": true, "partial_images": 4})),
        400,
        "partial_images",
    );
    assert_error(
        &img(json!({"stream": true, "response_format": "url"})),
        400,
        "response_format",
    );
    assert_error(&img(json!({"style": "vivid"})), 400, "style");
    assert_error(&img(json!({"prompt": ""})), 400, "prompt");
    let no_prompt = post(&s, "/v1/images/generations", &json!({"model": JANUS}));
    assert_error(&no_prompt, 400, "prompt");
    // not JSON; too large a body
    let (st, b, _) = call(ureq::post(&url(&s, "/v1/chat/completions")).send_string("{not json"));
    assert_eq!(st, 400, "{b}");
    assert!(serde_json::from_str::<Value>(&b).unwrap()["error"]["message"].is_string());
    // (raw: the server answers before the body is sent, so a client still writing it may
    // see the connection close instead of the answer)
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = write!(w, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\nConnection: close\r\n\r\n{}", "x".repeat(300_000));
    });
    let mut answer = String::new();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body_too_large\""), "{answer}");
    let _ = writer.join();
    assert_eq!(
        post(&s, "/v1/chat/completions", &chat_body("hi", 1, 2)).0,
        200
    );
}

#[test]
fn with_an_api_key_every_route_but_health_needs_the_bearer() {
    let s = start_janus(ServerConfig {
        api_key: Some("sekret".into()),
        ..cfg()
    });
    assert_eq!(get(&s, "/health").0, 200);
    for path in ["/v1/models", "/ready", "/metrics", "/openapi.json"] {
        let (st, b) = get(&s, path);
        assert_eq!(st, 401, "{path}: {b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
    }
    let (st, ..) = call(
        ureq::post(&url(&s, "/v1/chat/completions"))
            .set("authorization", "Bearer wrong")
            .send_string(&chat_body("hi", 1, 2).to_string()),
    );
    assert_eq!(st, 401);
    let (st, b, _) = call(
        ureq::post(&url(&s, "/v1/chat/completions"))
            .set("authorization", "Bearer sekret")
            .send_string(&chat_body("hi", 1, 2).to_string()),
    );
    assert_eq!(st, 200, "{b}");
    let (st, _, _) = call(
        ureq::get(&url(&s, "/v1/models"))
            .set("authorization", "Bearer sekret")
            .call(),
    );
    assert_eq!(st, 200);
}

#[test]
fn serve_subcommand_listens_on_loopback_and_answers() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(["serve", "--model"])
        .arg(janus_dir())
        .args(["--port", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve exited");
    }
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let id = janus_dir().display().to_string();
    let r = ureq::post(&format!("http://{addr}/v1/chat/completions"))
        .send_string(
            &json!({"model": id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
                .to_string(),
        )
        .unwrap();
    assert_eq!(r.status(), 200);
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn chat_images_come_back_in_message_images_streamed_or_not() {
    let s = start_with(cfg(), &[("chameleon", &chameleon_dir())]);
    let mut body = json!({"model": "chameleon", "messages": [{"role": "user", "content": "draw a cat"}],
                          "modalities": ["image"], "seed": 2});
    let (st, v) = post(&s, "/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], "");
    let img = &msg["images"][0];
    assert_eq!(
        (
            img["type"].clone(),
            img["index"].clone(),
            img["text_offset"].clone()
        ),
        (json!("image_url"), json!(0), json!(0))
    );
    let url = img["image_url"]["url"].as_str().unwrap();
    let png = b64()
        .decode(url.strip_prefix("data:image/png;base64,").unwrap())
        .unwrap();
    let req = Request::new()
        .text("draw a cat")
        .want(Modality::Image)
        .seed(2);
    let want = load_chameleon().generate(req).unwrap();
    assert_eq!(
        &image::load_from_memory(&png).unwrap().to_rgb8(),
        want.images()[0]
    );
    body["stream"] = json!(true);
    let chunks = stream(&s, &body);
    let images: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("images"))
        .collect();
    assert_eq!(images.len(), 1, "{chunks:?}");
    assert_eq!(images[0][0]["image_url"]["url"], json!(url));
}

#[test]
fn chat_subcommand_holds_a_conversation_and_attaches_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(["chat", "--max-new-tokens", "4", "--model"])
        .arg(janus_dir())
        .arg("--out-dir")
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let image = janus_dir().join("image.png");
    let script = format!(
        "hello\n/image {}\nwhat is this?\n/image /no/such.png\n/exit\n",
        image.display()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        so.lines().filter(|l| !l.is_empty()).count(),
        2,
        "two answers expected:\n{so}\n{se}"
    );
    assert!(se.contains("(attached") && se.contains("error:"), "{se}");
    // the first answer is the one-turn prompt's answer of the core (greedy by the family default)
    let first = core_text(
        &load_janus(),
        Request::new()
            .text("hello")
            .want(Modality::Text)
            .params(GenerationParams {
                max_new_tokens: Some(4),
                ..Default::default()
            }),
    );
    assert_eq!(so.lines().next().unwrap(), first[0]);
}

#[test]
fn a_family_that_takes_any_size_gets_the_size_asked_within_the_pixel_cap() {
    let s = start_with(cfg(), &[("emu3", &fixture_dir("emu3-tiny"))]);
    let body =
        |size: &str| json!({"model": "emu3", "prompt": "a red fox", "size": size, "seed": 1});
    let (st, v) = post(&s, "/v1/images/generations", &body("100000x100000"));
    assert_error(&(st, v), 400, "size");
    let req = |w, h| {
        Request::new()
            .text("a red fox")
            .want(Modality::Image)
            .params(GenerationParams {
                size: Some((w, h)),
                seed: 1,
                ..Default::default()
            })
    };
    let want = load(&fixture_dir("emu3-tiny"))
        .generate(req(16, 8))
        .unwrap();
    let (st, v) = post(&s, "/v1/images/generations", &body("16x8"));
    assert_eq!(st, 200, "{v}");
    let png = b64()
        .decode(v["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        &image::load_from_memory(&png).unwrap().to_rgb8(),
        want.images()[0]
    );
    assert_eq!(
        v["size"],
        format!("{}x{}", want.images()[0].width(), want.images()[0].height())
    );
}

#[test]
fn file_urls_are_read_only_under_the_allowed_media_directory() {
    let s = start_janus(ServerConfig {
        allowed_local_media: Some(janus_dir()),
        ..cfg()
    });
    let part = |url: String| {
        let mut b = chat_body("what is this?", 3, 4);
        b["messages"] = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is this?"}]}]);
        post(&s, "/v1/chat/completions", &b)
    };
    let inside = janus_dir().join("image.png");
    let (st, v) = part(format!("file://{}", inside.display()));
    assert_eq!(st, 200, "{v}");
    let png = std::fs::read(&inside).unwrap();
    let (_, v2) = part(format!("data:image/png;base64,{}", b64().encode(png)));
    assert_eq!(
        v["choices"][0]["message"]["content"],
        v2["choices"][0]["message"]["content"]
    );
    let outside = fixture_dir("showo-tiny").join("image.png");
    assert_error(
        &part(format!("file://{}", outside.display())),
        400,
        "messages[0].content[0].image_url.url",
    );
    let sneaky = format!("file://{}/../showo-tiny/image.png", janus_dir().display());
    assert_error(&part(sneaky), 400, "messages[0].content[0].image_url.url");
}
