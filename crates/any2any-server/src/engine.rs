//! One engine thread per loaded model. Requests wait in a bounded queue; the thread takes what
//! is waiting (up to `max_batch`) and runs it as one `generate_batch`, so each request is answered
//! as it would be alone with its own seed (the core batches rows, each request drawing from its
//! own seed's stream). A request whose client went away (its event receiver dropped: the HTTP
//! handler was dropped, the stream closed, or the request timed out) cancels the batch through
//! the core's cancel hook; the batch then runs again without it, the text already streamed to the
//! others not being sent twice.

use crate::metrics::ModelMetrics;
use any2any_core::{Backend, CancelToken, Error, Generated, Hooks, Output, Request};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What a request's handler hears from the engine.
#[derive(Debug)]
pub enum JobEvent {
    /// New text of the request's output `output` (0-based among its `num_outputs`).
    Text {
        /// The output of the request.
        output: usize,
        /// The new text.
        text: String,
    },
    /// The codes drawn so far of the request's image output `output` (asked with `previews`).
    Preview {
        /// The output of the request.
        output: usize,
        /// Steps done.
        step: usize,
        /// Steps of the image loop.
        total: usize,
        /// The code grid, (height, width).
        grid: (usize, usize),
        /// The codes drawn so far, row-major.
        codes: Vec<u32>,
    },
    /// The request's outputs (`num_outputs` of them), or why it failed.
    Done(Result<Vec<Output>, Error>),
}

/// How the engine batches.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most requests in one `generate_batch`.
    pub max_batch: usize,
    /// Most requests waiting; more are refused (429).
    pub max_queue: usize,
    /// How long the engine waits for more requests after the first one of a batch.
    pub batch_window: Duration,
}

struct Job {
    req: Request,
    events: UnboundedSender<JobEvent>,
    enqueued: Instant,
    previews: bool,
}

/// A job being served: how many bytes of each output's text its client has already had.
struct Pending {
    job: Job,
    sent: Vec<usize>,
    first_text: bool,
}

impl Pending {
    fn gone(&self) -> bool {
        self.job.events.is_closed()
    }
}

/// Why a request could not be queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue holds `max_queue` requests.
    Full(usize),
    /// The engine thread is gone.
    Stopped,
}

/// The handle of one model's engine thread.
pub struct Engine {
    tx: SyncSender<Job>,
    /// The engine's metrics.
    pub metrics: Arc<ModelMetrics>,
    alive: Arc<AtomicBool>,
    max_queue: usize,
}

impl Engine {
    /// Starts the engine thread of `backend`, named after the model `id`.
    pub fn start(id: &str, backend: Arc<dyn Backend>, cfg: EngineConfig) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.max_queue.max(1));
        let metrics = Arc::new(ModelMetrics::default());
        let alive = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            backend,
            cfg: cfg.clone(),
            metrics: metrics.clone(),
        };
        let flag = alive.clone();
        std::thread::Builder::new()
            .name(format!("engine {id}"))
            .spawn(move || {
                worker.run(rx);
                flag.store(false, Ordering::SeqCst);
            })?;
        Ok(Self {
            tx,
            metrics,
            alive,
            max_queue: cfg.max_queue,
        })
    }

    /// Whether the engine thread is running.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queues a checked request; its events arrive on the returned receiver (drop it to cancel),
    /// with [`JobEvent::Preview`]s at every step of its image loops when `previews` is set.
    pub fn submit(
        &self,
        req: Request,
        previews: bool,
    ) -> Result<UnboundedReceiver<JobEvent>, SubmitError> {
        let (events, rx) = unbounded_channel();
        let job = Job {
            req,
            events,
            enqueued: Instant::now(),
            previews,
        };
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full(self.max_queue),
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }
}

struct Worker {
    backend: Arc<dyn Backend>,
    cfg: EngineConfig,
    metrics: Arc<ModelMetrics>,
}

impl Worker {
    fn run(&self, rx: Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            let until = Instant::now() + self.cfg.batch_window;
            while jobs.len() < self.cfg.max_batch.max(1) {
                let now = Instant::now();
                let next = if now >= until {
                    rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
                } else {
                    rx.recv_timeout(until - now)
                };
                match next {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.metrics
                .queue_depth
                .fetch_sub(jobs.len(), Ordering::SeqCst);
            let pending = self
                .group(jobs)
                .into_iter()
                .map(|job| Pending {
                    sent: vec![0; job.req.num_outputs],
                    job,
                    first_text: false,
                })
                .collect();
            self.serve(pending);
        }
    }

    /// Orders jobs so that those the backend runs as one group are adjacent (first-come order
    /// otherwise kept).
    fn group(&self, jobs: Vec<Job>) -> Vec<Job> {
        let mut rest: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(rest.len());
        for i in 0..rest.len() {
            let Some(head) = rest[i].take() else { continue };
            let mut members = Vec::new();
            for slot in rest.iter_mut().skip(i + 1) {
                if slot
                    .as_ref()
                    .is_some_and(|j| self.backend.same_group(&head.req, &j.req))
                {
                    members.extend(slot.take());
                }
            }
            out.push(head);
            out.extend(members);
        }
        out
    }

    /// Runs the jobs as one batch until every one is answered or gone.
    fn serve(&self, mut pending: Vec<Pending>) {
        loop {
            let before = pending.len();
            pending.retain(|p| !p.gone());
            let gone = before - pending.len();
            self.metrics
                .cancelled
                .fetch_add(gone as u64, Ordering::Relaxed);
            if pending.is_empty() {
                return;
            }
            let started = Instant::now();
            match self.run_once(&mut pending) {
                Ok(outs) => {
                    self.record(&pending, &outs, started.elapsed());
                    deliver(pending, outs);
                    return;
                }
                Err(Error::Cancelled { .. }) if pending.iter().any(Pending::gone) => continue,
                Err(_) if pending.len() > 1 => {
                    // one request may have failed the batch: answer each on its own
                    for p in pending {
                        self.serve(vec![p]);
                    }
                    return;
                }
                Err(e) => {
                    if let Some(p) = pending.into_iter().next() {
                        let _ = p.job.events.send(JobEvent::Done(Err(e)));
                    }
                    return;
                }
            }
        }
    }

    /// One `generate_batch` over the pending jobs, streaming their text.
    fn run_once(&self, pending: &mut [Pending]) -> Result<Vec<Output>, Error> {
        let reqs: Vec<Request> = pending.iter().map(|p| p.job.req.clone()).collect();
        // output index of the batch → (job, output of the job)
        let owner: Vec<(usize, usize)> = reqs
            .iter()
            .enumerate()
            .flat_map(|(j, r)| (0..r.num_outputs).map(move |o| (j, o)))
            .collect();
        let token = CancelToken::new();
        let watch = token.clone();
        let seen: Vec<Cell<usize>> = owner.iter().map(|_| Cell::new(0)).collect();
        let shared: &[Pending] = pending;
        let sent: Vec<Cell<usize>> = shared
            .iter()
            .flat_map(|p| p.sent.iter().map(|&s| Cell::new(s)))
            .collect();
        let first: Vec<Cell<bool>> = shared.iter().map(|p| Cell::new(p.first_text)).collect();
        let result = {
            let mut hooks = Hooks::new().cancel_token(token);
            if shared.iter().any(|p| p.job.previews) {
                hooks = hooks.on_preview(1, |p| {
                    let Some(&(j, o)) = owner.get(p.output) else {
                        return;
                    };
                    if shared[j].job.previews {
                        let _ = shared[j].job.events.send(JobEvent::Preview {
                            output: o,
                            step: p.step,
                            total: p.total,
                            grid: p.grid,
                            codes: p.codes.to_vec(),
                        });
                    }
                });
            }
            hooks = hooks
                .on_progress(|_| {
                    if shared.iter().any(Pending::gone) {
                        watch.cancel();
                    }
                })
                .on_text(|d| {
                    let Some(&(j, o)) = owner.get(d.output) else {
                        return;
                    };
                    let at = seen[d.output].get();
                    let end = at + d.text.len();
                    seen[d.output].set(end);
                    let done = sent[d.output].get();
                    if end <= done {
                        return;
                    }
                    let skip = done.saturating_sub(at);
                    let Some(new) = d.text.get(skip..) else {
                        return;
                    };
                    sent[d.output].set(end);
                    if !first[j].replace(true) {
                        let t = shared[j].job.enqueued.elapsed().as_secs_f64();
                        self.metrics.ttft.observe(t);
                    }
                    let _ = shared[j].job.events.send(JobEvent::Text {
                        output: o,
                        text: new.to_string(),
                    });
                });
            let backend = &self.backend;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                backend.generate_batch(&reqs, &mut hooks)
            }))
            .unwrap_or_else(|_| {
                Err(Error::invalid(
                    "request",
                    "the model's generate panicked on this batch (a bug: please report it)",
                ))
            })
        };
        let mut k = 0;
        for (p, f) in pending.iter_mut().zip(&first) {
            p.first_text = f.get();
            for s in p.sent.iter_mut() {
                *s = sent[k].get();
                k += 1;
            }
        }
        result
    }

    fn record(&self, pending: &[Pending], outs: &[Output], took: Duration) {
        self.metrics.batch_size.observe(pending.len() as f64);
        let (mut tokens, mut images) = (0usize, 0usize);
        for s in outs.iter().flat_map(|o| &o.segments) {
            match s {
                Generated::Text { ids, .. } => tokens += ids.len(),
                Generated::Image { .. } => images += 1,
                _ => {}
            }
        }
        if tokens > 0 {
            self.metrics
                .tokens
                .fetch_add(tokens as u64, Ordering::Relaxed);
            self.metrics
                .text_micros
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        }
        for _ in 0..images {
            self.metrics
                .image_seconds
                .observe(took.as_secs_f64() / images as f64);
        }
    }
}

/// Sends each job its outputs (request-major, `num_outputs` each).
fn deliver(pending: Vec<Pending>, outs: Vec<Output>) {
    let mut outs = outs.into_iter();
    for p in pending {
        let mine: Vec<Output> = outs.by_ref().take(p.job.req.num_outputs).collect();
        let _ = p.job.events.send(JobEvent::Done(Ok(mine)));
    }
}
