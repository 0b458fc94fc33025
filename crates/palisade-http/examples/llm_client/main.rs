//! A hyper-util client calling a fake LLM provider (a real hyper server on 127.0.0.1, in this
//! program) that rate-limits with 429 + `retry-after-ms`, fails with 503, stalls now and then
//! and answers one request with a spent quota (a 429 whose body says `insufficient_quota`):
//! once with no layers, once behind palisade's recommended stack with the HTTP classifier and
//! `PeekLayer`, which reads the failing body so that the spent quota is not retried. Prints
//! each request's outcome and a summary.
//!
//! ```sh
//! cargo run -p palisade-http --example llm_client
//! ```

mod demo;

fn main() -> Result<(), palisade::classify::BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(demo::run(12))?;
    print!("{report}");
    Ok(())
}
