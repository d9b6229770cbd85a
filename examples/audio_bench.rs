//! Audio engine benchmark.
//!
//! ```sh
//! cargo run --release --example audio_bench                      # processing cost (any machine)
//! cargo build --release --example audio_bench
//! scripts/vm run --modules snd-aloop -- target/release/examples/audio_bench --latency            # 60 s
//! scripts/vm run --modules snd-aloop --timeout 900 -- target/release/examples/audio_bench --latency --seconds 600 --busy  # soak
//! ```
//!
//! Default mode: the cost of one 20 ms frame each way, in ns and as a share of
//! one core (20 ms): to the AI (device 8 kHz → 16 kHz PCM), from the AI (agent
//! rate → 8 kHz device, for each agent rate), G.711, and the real-time loop's
//! own cost per 10 ms period (simulated devices, free-running).
//!
//! `--latency` (needs the ALSA loopback: run it in the guest): the engine on
//! the real devices for `--seconds` (default 60), the async side on tokio as in
//! the daemon; prints the box-added latency per direction (p50/p99) and the
//! xrun counts. `--busy` keeps the other core busy meanwhile. `--sparse`
//! sends one agent frame per 100 ms, so each finds the playback ring empty:
//! the delay the box itself adds, without audio queued ahead of it.

#[path = "../tests/support/sim_pcm.rs"]
mod sim_pcm;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cap4::audio::g711::{ulaw_decode_slice, ulaw_encode_slice};
use cap4::audio::{AudioConfig, AudioEngine, RateConverter, RtHooks};
use sim_pcm::SimPcm;

const FRAME_NS: f64 = 20_000_000.0;

fn report(name: &str, ns: f64) {
    println!("{name:<44} {ns:>9.0} ns/frame  {:>6.3} % of one core", ns / FRAME_NS * 100.0);
}

fn time_per_frame(frames: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..frames / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..frames {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / frames as f64
}

fn tone(rate: u32, n: usize) -> Vec<i16> {
    (0..n).map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin()) as i16).collect()
}

fn cost() {
    let frames = 20_000;
    println!("processing cost of one 20 ms frame ({} frames each, release build):", frames);
    // To the AI: the caller's 8 kHz frame → 16 kHz PCM16 little-endian bytes.
    let caller = tone(8000, 160 * 50);
    let mut up = RateConverter::new(8000, 16000).unwrap();
    let mut bytes = vec![0u8; 2 * 400];
    let ns = time_per_frame(frames, |i| {
        let f = &caller[(i % 50) * 160..(i % 50 + 1) * 160];
        let out = up.process_block(f);
        for (b, s) in bytes.chunks_exact_mut(2).zip(out) {
            b.copy_from_slice(&s.to_le_bytes());
        }
        black_box(&bytes);
    });
    report("to AI: 8 kHz -> 16 kHz PCM16 (resample+pack)", ns);
    // To the AI, µ-law agents: encode the 8 kHz frame.
    let mut codes = vec![0u8; 160];
    let ns = time_per_frame(frames, |i| {
        ulaw_encode_slice(&caller[(i % 50) * 160..(i % 50 + 1) * 160], &mut codes);
        black_box(&codes);
    });
    report("to AI: 8 kHz -> mu-law 8 kHz (encode)", ns);
    // From the AI: each agent rate → 8 kHz device samples.
    for rate in [16000u32, 22050, 24000, 44100] {
        let chunk = (rate / 50) as usize;
        let agent = tone(rate, chunk * 50);
        let agent_bytes: Vec<u8> = agent.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut down = RateConverter::new(rate, 8000).unwrap();
        let mut pcm = vec![0i16; chunk];
        let ns = time_per_frame(frames, |i| {
            let b = &agent_bytes[(i % 50) * chunk * 2..(i % 50 + 1) * chunk * 2];
            for (s, c) in pcm.iter_mut().zip(b.chunks_exact(2)) {
                *s = i16::from_le_bytes([c[0], c[1]]);
            }
            black_box(down.process_block(&pcm));
        });
        report(&format!("from AI: PCM16 {rate} Hz -> 8 kHz (unpack+resample)"), ns);
    }
    let mut back = vec![0i16; 160];
    ulaw_encode_slice(&caller[..160], &mut codes);
    let ns = time_per_frame(frames, |_| {
        ulaw_decode_slice(&codes, &mut back);
        black_box(&back);
    });
    report("from AI: mu-law 8 kHz -> 8 kHz (decode)", ns);

    // The real-time loop itself on simulated devices, free-running.
    let cfg = AudioConfig { realtime_priority: 0, lock_memory: false, ..AudioConfig::default() };
    let period = cfg.period_frames();
    let fill = period * cfg.playback_fill_periods as usize;
    let buffer = period * cfg.buffer_periods as usize;
    let (sim, mut heard) = SimPcm::new(period, buffer, fill, None, |i| (i % 1000) as i16, 1 << 16);
    let mut engine = AudioEngine::start_with(&cfg, RtHooks::default(), move || Ok::<_, std::convert::Infallible>((sim, buffer))).unwrap();
    let frame = vec![1000i16; engine.frame_len()];
    let mut buf = vec![0i16; engine.frame_len()];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        while engine.try_recv_frame(&mut buf) {}
        while engine.send_capacity() > 8000 {
            engine.send(&frame);
        }
        while heard.pop().is_ok() {}
        std::thread::yield_now();
    }
    let elapsed = start.elapsed();
    let stats = engine.stop().unwrap();
    let periods = stats.captured_ms as f64 / f64::from(cfg.period_ms);
    let ns = elapsed.as_nanos() as f64 / periods;
    println!(
        "{:<44} {ns:>9.0} ns/period {:>6.3} % of one core (per {} ms period, both directions, with the consumer on the other core)",
        "real-time loop (simulated devices)",
        ns / (f64::from(cfg.period_ms) * 1e6) * 100.0,
        cfg.period_ms
    );
}

async fn latency(seconds: u64, busy: bool, sparse: bool) {
    if busy {
        std::thread::spawn(|| {
            let mut x = 0u64;
            loop {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
    }
    let cfg = AudioConfig::default();
    let mut engine = match AudioEngine::start(&cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("audio_bench: {e} (run it where the ALSA loopback exists: scripts/vm run --modules snd-aloop -- ...)");
            std::process::exit(1);
        }
    };
    println!("engine: {:?}", engine.report());
    let frame: Vec<i16> = tone(8000, engine.frame_len());
    let mut buf = vec![0i16; engine.frame_len()];
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut next_print = Instant::now() + Duration::from_secs(60);
    let mut received = 0u64;
    while Instant::now() < until {
        // The agent answers each caller frame with one of its own, in real
        // time; with --sparse, one frame in five, so that each send finds
        // the ring empty: the box's own delay, with no audio queued ahead.
        if engine.recv_frame(&mut buf).await.is_err() {
            eprintln!("audio_bench: the audio thread stopped");
            break;
        }
        received += 1;
        if sparse && received % 5 != 0 {
            continue;
        }
        if sparse {
            engine.end_utterance();
        }
        engine.send(&frame);
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(60);
            println!("... {:?}", engine.stats());
        }
    }
    let lat = engine.latency();
    let stats = engine.stop().unwrap();
    println!("{seconds} s on {} / {} (busy other core: {busy}, sparse sends: {sparse}):", cfg.capture_device, cfg.playback_device);
    println!(
        "  capture  (ALSA period read -> 20 ms frame handed to the AI side): p50 {:.1} ms  p99 {:.1} ms  ({} frames)",
        lat.capture_p50_ms, lat.capture_p99_ms, lat.capture_count
    );
    println!(
        "  playback (AI frame sent -> written to ALSA):                       p50 {:.1} ms  p99 {:.1} ms  ({} frames)",
        lat.playback_p50_ms, lat.playback_p99_ms, lat.playback_count
    );
    println!(
        "  playback (AI frame sent -> played, incl. device queue):           p50 {:.1} ms  p99 {:.1} ms",
        lat.playback_played_p50_ms, lat.playback_played_p99_ms
    );
    println!(
        "  playback (sent -> written, less the agent audio queued ahead):  p50 {:.1} ms  p99 {:.1} ms",
        lat.playback_added_p50_ms, lat.playback_added_p99_ms
    );
    println!(
        "  xruns: capture {} playback {}; underruns {}; longest wake-up gap {} ms; realtime {}; memory locked {}",
        stats.capture_xruns, stats.playback_xruns, stats.underruns, stats.longest_wakeup_gap_ms, stats.realtime, stats.memory_locked
    );
    println!("  stats: {stats:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let seconds = args.iter().position(|a| a == "--seconds").and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(60);
    if flag("--latency") {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(latency(seconds, flag("--busy"), flag("--sparse")));
    } else {
        cost();
    }
}
