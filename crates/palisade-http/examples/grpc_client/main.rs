//! A tonic client calling a tonic server (in this program, on 127.0.0.1) that fails with
//! `UNAVAILABLE` and `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`, then has an outage:
//! once with no layers, once through palisade's layers as recommended for a tonic client
//! (`ServerDeadline`, replay, the preset with `GrpcClassifier`: retry honouring the pushback,
//! breaker; `PropagateDeadline`; failing statuses restored, palisade's errors as gRPC statuses
//! with `GrpcStatus::from_error`). The messages and the service are written by hand (prost's
//! derive, tonic's codec): no `.proto` file, no build script. Prints each request's outcome.
//!
//! ```sh
//! cargo run -p palisade-http --example grpc_client
//! ```

mod demo;

fn main() -> Result<(), palisade::classify::BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(demo::run(14))?;
    print!("{report}");
    Ok(())
}
