//! What loading an Emu2 checkpoint holds in memory: loads it (as `any2any` does: every shard
//! memory-mapped, each tensor read and cast on its own) while a thread samples the process's
//! anonymous memory (`RssAnon`: the weights' own copy; the mapped shards are file pages the
//! kernel can drop), then prints the weights' bytes, the peak and final `RssAnon`, and `VmHWM`
//! (the peak of everything resident, mapped file pages included).
//!
//!     cargo run --release -p any2any-emu2 --example load_memory -- DIR [f32|bf16]
//!
//! A checkpoint to try it on: `scripts/synthetic_emu2.py` (a multi-shard bf16 checkpoint of a
//! chosen size, written outside the repository).

use any2any_core::candle_core::DType;
use any2any_core::{LoadOptions, ModelFiles};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> any2any_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| any2any_core::Error::invalid("DIR", "usage: load_memory DIR [f32|bf16]"))?;
    let dtype = match args.next().as_deref() {
        None | Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some(other) => return Err(any2any_core::Error::invalid("dtype", other.to_string())),
    };
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib("RssAnon:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let before = status_kib("RssAnon:");
    let files = ModelFiles::from_dir(std::path::Path::new(&dir))?;
    let opts = LoadOptions {
        dtype: Some(dtype),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let model = any2any_emu2::Emu2Backend::load(&files, &opts)?;
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let params = model.model().backbone_cfg.num_params();
    println!("checkpoint        {dir}");
    println!("dtype             {dtype:?}");
    println!(
        "LLM weights       {:.1} MiB ({params} parameters)",
        (params * dtype.size_in_bytes()) as f64 / 1048576.0
    );
    println!("RssAnon before    {:.1} MiB", mib(before));
    println!(
        "RssAnon peak      {:.1} MiB",
        mib(peak.load(Ordering::Relaxed))
    );
    println!("RssAnon loaded    {:.1} MiB", mib(status_kib("RssAnon:")));
    println!("VmHWM             {:.1} MiB", mib(status_kib("VmHWM:")));
    println!("load time         {secs:.1} s");
    Ok(())
}
