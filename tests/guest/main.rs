//! Every test that boots the QEMU test bench (`scripts/vm`, `support/vmkit.rs`),
//! in one binary: each test is `#[ignore]`d on the host and re-runs itself in
//! a guest with real snd-aloop, gpio-sim and systemd. `cargo test --test
//! guest -- --ignored --test-threads=1`; one:
//! `cargo test --test guest -- --ignored --exact vm_bench::audio_loopback_is_sample_exact`.

#[path = "../support/mod.rs"]
mod support;

mod vm_ai;
mod vm_amd;
mod vm_api_load;
mod vm_audio;
mod vm_bench;
mod vm_box;
mod vm_chaos;
mod vm_cpu;
mod vm_dtmf;
mod vm_first_word;
mod vm_incoming;
mod vm_jitter;
mod vm_recording;
mod vm_soak;
mod vm_transfer;
