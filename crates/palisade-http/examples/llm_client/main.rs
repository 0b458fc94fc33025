//! A hyper-util client calling a fake LLM provider (a real hyper server on 127.0.0.1, in this
//! program) that rate-limits with 429 + `retry-after-ms`, fails with 503 and stalls now and
//! then: once with no layers, once behind palisade's recommended stack with the HTTP
//! classifier. Prints each request's outcome and a summary.
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
