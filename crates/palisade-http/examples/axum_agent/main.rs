//! An axum server whose handlers call a flaky downstream tool through palisade's layers
//! (deadline, retries, breaker, attempt timeout, HTTP classification, deadline propagation),
//! with palisade's layers on the `Router` too (the caller's deadline, failures as responses)
//! and `/health` and `/ready` beside them; then a scripted client run against it, on
//! 127.0.0.1 only.
//!
//! ```sh
//! cargo run -p palisade-http --example axum_agent --features axum
//! ```

mod demo;

fn main() -> Result<(), palisade::classify::BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (lines, tool) = runtime.block_on(demo::run())?;
    for line in &lines {
        println!("{line}");
    }
    println!(
        "the tool was called {} times; deadlines it was sent (ms): {}",
        tool.calls.load(std::sync::atomic::Ordering::SeqCst),
        tool.deadlines
            .lock()
            .map(|d| d.join(" "))
            .unwrap_or_default()
    );
    Ok(())
}
