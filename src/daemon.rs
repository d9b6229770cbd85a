//! `cap4 run`: wires the daemon together (config, log, store, Baresip client,
//! controller, HTTP API) and runs it until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::baresip::client::{self, ClientConfig};
use crate::clock::Clock;
use crate::config::Config;
use crate::controller::Controller;
use crate::environment::ProcessEnv;
use crate::exit;
use crate::store::Store;

/// Largest frame accepted from Baresip. Its biggest replies (`callstat` with SDP,
/// `help`) are a few KiB.
const MAX_FRAME: usize = 256 * 1024;

pub fn run(config_path: &Path) -> i32 {
    let config = match Config::load(config_path, &ProcessEnv) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("cap4: {err}");
            return exit::CONFIG;
        }
    };
    crate::logging::init(config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the async runtime");
            return exit::FAILURE;
        }
    };
    runtime.block_on(serve(Arc::new(config)))
}

async fn serve(config: Arc<Config>) -> i32 {
    let clock = Clock::start();
    // Bind first: a second daemon started by mistake fails here, before it
    // touches the call history (which is also locked).
    let listener = match tokio::net::TcpListener::bind(config.api.listen).await {
        Ok(l) => l,
        Err(err) => {
            error!(%err, listen = %config.api.listen, "cannot listen for the HTTP API");
            return exit::FAILURE;
        }
    };

    let (store, report) = match Store::open(&config.storage.dir, clock.now().unix_ms) {
        Ok(opened) => opened,
        Err(err) => {
            error!(%err, "cannot open the call history");
            return exit::CANT_CREATE;
        }
    };
    for line in &report.skipped_lines {
        warn!(line, dir = %config.storage.dir.display(), "call journal: incomplete line skipped (cut short by a crash or power loss)");
    }
    for id in &report.interrupted {
        warn!(call_id = %id, "call was active when cap4 last stopped; recorded as failed");
    }
    info!(calls = report.records, dir = %config.storage.dir.display(), "call history loaded");

    let (reports_tx, reports_rx) = mpsc::channel(64);
    let client_config = ClientConfig {
        addr: config.baresip.ctrl.to_string(),
        command_timeout: config.baresip.command_timeout,
        max_frame: MAX_FRAME,
        backoff_min: std::time::Duration::from_millis(100),
        backoff_max: std::time::Duration::from_secs(5),
    };
    let baresip = client::spawn(client_config, reports_tx);
    // The link's task holds the receiving end: it is gone when this resolves.
    let link = baresip.clone();
    let mut link_task = tokio::spawn(async move { link.closed().await });
    let (api_tx, api_rx) = mpsc::channel(32);
    let (linked_tx, linked_rx) = oneshot::channel();
    let extras = match box_io(&config) {
        Ok(extras) => extras,
        Err(err) => {
            error!(%err, "cannot use the GPIO lines configured in [gpio]");
            return exit::CONFIG;
        }
    };
    let (journal, loaded) = match crate::plan::journal::RunJournal::open(&config.storage.dir, crate::plan::machine::MAX_RUNS) {
        Ok(opened) => opened,
        Err(err) => {
            error!(%err, "cannot open the plan runs");
            return exit::CANT_CREATE;
        }
    };
    for line in &loaded.skipped_lines {
        warn!(line, "plan journal: incomplete line skipped (cut short by a crash or power loss)");
    }
    let mut controller = Controller::new(config.clone(), store, clock, baresip, Some(linked_tx)).with_plans(journal, loaded);
    let mut webhook_task = None;
    if let Some(webhook_config) = config.webhook.clone() {
        let outbox = match crate::webhook::outbox::Outbox::open(&config.storage.dir, webhook_config.max_pending) {
            Ok(outbox) => outbox,
            Err(err) => {
                error!(%err, "cannot open the webhook outbox");
                return exit::CANT_CREATE;
            }
        };
        info!(pending = outbox.len(), host = webhook_config.url.host().unwrap_or(""), "webhook outbox opened");
        let webhook = crate::webhook::deliver::Webhook {
            outbox: Arc::new(std::sync::Mutex::new(outbox)),
            bell: Arc::new(tokio::sync::Notify::new()),
        };
        webhook_task = Some(tokio::spawn(crate::webhook::deliver::run(webhook.clone(), webhook_config)));
        controller = controller.with_webhook(webhook, &report.interrupted);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let router = crate::api::router(api_tx, config.api.token.clone(), config.baresip.ctrl);
    let mut api_stop = stop_rx.clone();
    let mut api = tokio::spawn(crate::api::server::serve(listener, router, crate::api::server::Limits::default(), async move {
        let _ = api_stop.changed().await;
    }));
    info!(listen = %config.api.listen, baresip = %config.baresip.ctrl, "cap4 daemon started");
    // systemd: READY only once the config is loaded and Baresip is connected.
    tokio::spawn(async move {
        if linked_rx.await.is_ok() {
            info!("ready: Baresip connected");
            crate::sd_notify::Notifier::from_env().ready("Baresip connected");
        }
    });

    // The watchdog pings from its own task while the controller is alive:
    // a slow disk write is not a hang (`liveness.rs`).
    if let Some(interval) = crate::sd_notify::Notifier::watchdog_interval() {
        let notifier = crate::sd_notify::Notifier::from_env();
        let limits = crate::liveness::Limits::default();
        tokio::spawn(crate::liveness::watch(controller.liveness(), interval, limits, move || notifier.watchdog()));
    }
    let mut controller_stop = stop_rx;
    let mut controller_task = tokio::spawn(controller.run(reports_rx, api_rx, extras, async move {
        let _ = controller_stop.changed().await;
    }));
    // Without a webhook its task is one that never ends.
    let mut webhook_task = webhook_task.unwrap_or_else(|| tokio::spawn(std::future::pending()));
    let tasks = &mut [
        ("controller", &mut controller_task),
        ("HTTP API", &mut api),
        ("Baresip link", &mut link_task),
        ("webhook", &mut webhook_task),
    ];
    if let Err(ended) = crate::supervise::until_shutdown(wait_for_signal(), tasks).await {
        // Without it the daemon would answer 503 (or nothing) until someone
        // noticed; exiting lets systemd restart it, and says why.
        error!(task = ended.task, how = %ended.how, "{ended}: cap4 exits");
        return exit::SOFTWARE;
    }
    let _ = stop_tx.send(true);
    let _ = controller_task.await;
    if let Err(err) = api.await {
        warn!(%err, "HTTP API task failed");
    }
    info!("cap4 daemon stopped");
    exit::OK
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers only Ctrl-C via the default action stops us.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

/// Opens the button and LED lines of `[gpio]` and starts their thread and task.
fn box_io(config: &Config) -> Result<crate::controller::Extras, crate::gpio::GpioError> {
    let none = crate::controller::Extras { presses: None, leds: None };
    let Some(gpio) = crate::gpio::open(config.gpio.backend, &config.gpio.chip)? else {
        return Ok(none);
    };
    let presses = match config.gpio.button {
        Some(line) => {
            let input = gpio.input(line, config.gpio.debounce)?;
            let (tx, rx) = mpsc::channel(8);
            crate::button::spawn(input, config.button.long_press, tx);
            Some(rx)
        }
        None => None,
    };
    let green = config.gpio.led_green.map(|l| gpio.output(l)).transpose()?;
    let red = config.gpio.led_red.map(|l| gpio.output(l)).transpose()?;
    let leds = if green.is_some() || red.is_some() {
        let (tx, rx) = tokio::sync::watch::channel(crate::leds::LedView::steady(crate::leds::LedState::NoBaresip));
        tokio::spawn(crate::leds::run(crate::leds::Leds { green, red }, rx));
        Some(tx)
    } else {
        None
    };
    info!(
        backend = ?config.gpio.backend,
        chip = %config.gpio.chip,
        button = config.gpio.button.is_some(),
        leds = leds.is_some(),
        "GPIO ready"
    );
    Ok(crate::controller::Extras { presses, leds })
}
