//! Prometheus metrics in the text exposition format: requests, queue depth, batch sizes, time to
//! first token, tokens and seconds of text generation, seconds per image.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    /// A histogram over `bounds` (ascending upper bounds, `+Inf` added).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        if let Ok(mut c) = self.counts.lock() {
            for (i, b) in self.bounds.iter().enumerate() {
                if v <= *b {
                    c.0[i] += 1;
                }
            }
            c.1 += v;
            c.2 += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let Ok(c) = self.counts.lock() else { return };
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, n) in self.bounds.iter().zip(&c.0) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", c.2);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", c.1);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", c.2);
    }
}

/// The metrics of one model's engine.
#[derive(Debug)]
pub struct ModelMetrics {
    /// Requests waiting in the queue.
    pub queue_depth: AtomicUsize,
    /// Requests per `generate_batch` call.
    pub batch_size: Histogram,
    /// Seconds from enqueueing to the first streamed text.
    pub ttft: Histogram,
    /// Seconds per generated image (batch time over its images).
    pub image_seconds: Histogram,
    /// Text tokens generated.
    pub tokens: AtomicU64,
    /// Microseconds spent in batches that generated text.
    pub text_micros: AtomicU64,
    /// Requests whose client went away (or timed out) before the answer.
    pub cancelled: AtomicU64,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        Self {
            queue_depth: AtomicUsize::new(0),
            batch_size: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            ttft: Histogram::new(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            image_seconds: Histogram::new(&[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
            tokens: AtomicU64::new(0),
            text_micros: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }
}

/// Every metric of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    /// Counts one answered request of `route` with `status`.
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_insert(0) += 1;
        }
    }

    /// The exposition text, with the engines' metrics by model id.
    pub fn render(&self, models: &[(&str, &ModelMetrics)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP any2any_requests_total HTTP requests answered, by route and status.\n# TYPE any2any_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "any2any_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let simple = gauges();
        for (name, kind, help, get) in simple {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, m) in models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(id), get(m));
            }
        }
        let hists = histograms();
        for (name, help, get) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (id, m) in models {
                get(m).render(&mut out, name, &format!("model=\"{}\"", escape(id)));
            }
        }
        out
    }
}

type Gauge = fn(&ModelMetrics) -> f64;
type Hist = fn(&ModelMetrics) -> &Histogram;

/// The per-model gauges and counters: name, type, help, value.
fn gauges() -> [(&'static str, &'static str, &'static str, Gauge); 5] {
    [
        (
            "any2any_queue_depth",
            "gauge",
            "Requests waiting for the model's engine.",
            |m| m.queue_depth.load(Ordering::Relaxed) as f64,
        ),
        (
            "any2any_generated_tokens_total",
            "counter",
            "Text tokens generated.",
            |m| m.tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "any2any_text_generation_seconds_total",
            "counter",
            "Seconds spent in batches that generated text.",
            |m| m.text_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "any2any_tokens_per_second",
            "gauge",
            "Generated text tokens over text generation seconds.",
            |m| {
                let s = m.text_micros.load(Ordering::Relaxed) as f64 / 1e6;
                if s > 0.0 {
                    m.tokens.load(Ordering::Relaxed) as f64 / s
                } else {
                    0.0
                }
            },
        ),
        (
            "any2any_cancelled_total",
            "counter",
            "Requests cancelled because the client left or timed out.",
            |m| m.cancelled.load(Ordering::Relaxed) as f64,
        ),
    ]
}

/// The per-model histograms: name, help, histogram.
fn histograms() -> [(&'static str, &'static str, Hist); 3] {
    [
        (
            "any2any_batch_size",
            "Requests coalesced into one generate_batch.",
            |m| &m.batch_size,
        ),
        (
            "any2any_time_to_first_token_seconds",
            "Seconds from arrival to the first streamed text.",
            |m| &m.ttft,
        ),
        (
            "any2any_seconds_per_image",
            "Seconds of generation per image.",
            |m| &m.image_seconds,
        ),
    ]
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(5.0);
        let mut s = String::new();
        h.render(&mut s, "x", "model=\"m\"");
        assert!(s.contains("x_bucket{model=\"m\",le=\"1\"} 1"), "{s}");
        assert!(s.contains("x_bucket{model=\"m\",le=\"2\"} 2"), "{s}");
        assert!(s.contains("x_bucket{model=\"m\",le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("x_count{model=\"m\"} 3"), "{s}");
    }
}
