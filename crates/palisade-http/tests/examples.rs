//! The examples' programs, run on tokio's paused clock so that they cannot rot.

#[path = "../examples/llm_client/demo.rs"]
#[allow(dead_code, unreachable_pub)]
mod llm_client;

#[path = "../examples/grpc_client/demo.rs"]
#[allow(dead_code, unreachable_pub)]
mod grpc_client;

#[cfg(feature = "axum")]
#[path = "../examples/axum_agent/demo.rs"]
#[allow(dead_code)]
mod axum_agent;

use std::time::Duration;

/// Whether a request answered on its retry took the server's hint of `hint_ms`, stretched by
/// 0 to 10 % (the retry layer spreads the callers a server paced together).
fn waited_hint(took: Duration, hint_ms: u64) -> bool {
    let hint = Duration::from_millis(hint_ms);
    took >= hint && took <= hint.mul_f64(1.1)
}

#[tokio::test(start_paused = true)]
async fn llm_client_palisade_answers_what_the_bare_client_cannot() {
    let report = llm_client::run(12).await.unwrap();
    println!("{report}");
    let ok = |o: &[llm_client::Outcome]| o.iter().filter(|o| o.status == Some(200)).count();
    // Bare: every fault reaches the caller (429s, 503s; the stall answers, late).
    assert_eq!(ok(&report.bare), 7);
    assert!(report.bare.iter().all(|o| o.calls == 1));
    assert_eq!(report.bare[5].took, Duration::from_secs(3));
    // palisade: all but request 9 (down every time) and 11 (quota spent) answered.
    assert_eq!(ok(&report.palisade), 10);
    assert_eq!(report.palisade[9].status, Some(503));
    assert_eq!(report.palisade[9].calls, 3);
    // The spent quota is read from the 429's body and not retried.
    assert_eq!(report.palisade[11].status, Some(429));
    assert_eq!(report.palisade[11].calls, 1);
    // The 429 waited the server's 150 ms (stretched by up to a tenth), the stall was cut at
    // 500 ms.
    assert!(waited_hint(report.palisade[1].took, 150));
    assert_eq!(report.palisade[1].calls, 2);
    assert_eq!(report.palisade[5].calls, 2);
    assert!(
        report.palisade[5].took < Duration::from_secs(1),
        "{:?}",
        report.palisade[5]
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_client_palisade_retries_with_pushback_and_opens_the_breaker() {
    use grpc_client::Outcome;
    use palisade::breaker::State;
    use tonic::Code;
    let report = grpc_client::run(14).await.unwrap();
    println!("{report}");
    let codes = |o: &[Outcome]| o.iter().map(|o| o.code).collect::<Vec<_>>();
    let calls = |o: &[Outcome]| o.iter().map(|o| o.calls).collect::<Vec<_>>();
    use Code::{Ok as OK, ResourceExhausted as Exhausted, Unavailable};
    // Bare: the first answer is the answer.
    assert_eq!(
        codes(&report.bare),
        [
            OK,
            Exhausted,
            OK,
            Unavailable,
            Exhausted,
            Exhausted,
            Unavailable,
            Unavailable,
            Unavailable,
            Unavailable,
            Unavailable,
            Unavailable,
            OK,
            Exhausted
        ]
    );
    assert!(report.bare.iter().all(|o| o.calls == 1));
    // palisade: RESOURCE_EXHAUSTED retried after the server's pushback, UNAVAILABLE
    // after a backoff; a negative pushback (request 4) not retried; request 6 down on all 3
    // attempts; the outage (8 to 11) opens the breaker after 5 failures in a row, and the
    // requests that follow fail at once without reaching the server; after the open second,
    // probes succeed and close it.
    assert_eq!(
        codes(&report.palisade),
        [
            OK,
            OK,
            OK,
            OK,
            Exhausted,
            OK,
            Unavailable,
            OK,
            Unavailable,
            Unavailable,
            Unavailable,
            Unavailable,
            OK,
            OK
        ]
    );
    assert_eq!(
        calls(&report.palisade),
        [1, 2, 1, 2, 1, 2, 3, 2, 3, 2, 0, 0, 1, 2]
    );
    for id in [1, 5, 13] {
        assert!(waited_hint(report.palisade[id].took, 150), "{id}");
    }
    assert_eq!(report.palisade[10].took, Duration::ZERO);
    assert!(
        report.palisade[10]
            .note
            .starts_with("circuit 'oracle' open"),
        "{:?}",
        report.palisade[10]
    );
    assert_eq!(report.breaker[8], State::Closed);
    assert_eq!(report.breaker[9], State::Open);
    assert_eq!(report.breaker[12], State::HalfOpen);
    assert_eq!(report.breaker[13], State::Closed);
}

#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn axum_agent_scripted_run() {
    let (lines, tool) = axum_agent::run().await.unwrap();
    for line in &lines {
        println!("{line}");
    }
    let line = |what: &str| lines.iter().filter(|l| l.what == what).collect::<Vec<_>>();
    assert_eq!(line("liveness")[0].status, 200);
    assert_eq!(line("readiness")[0].status, 200);
    assert_eq!(line("ask (tool up)")[0].body, "the tool says 42");
    let down = line("ask (tool down)");
    // The first failures are the tool's own answer after the retries, passed through as it
    // was; then the breaker is open: 503 at once, saying when to come back.
    assert_eq!(
        (down[0].status, down[0].body.as_str()),
        (503, "tool unavailable")
    );
    let open = down.last().unwrap();
    assert_eq!(open.status, 503, "{open}");
    assert_eq!(open.took, Duration::ZERO);
    assert!(
        open.headers.iter().any(|(k, _)| k == "retry-after"),
        "{open}"
    );
    let ready = line("readiness (breaker open)")[0];
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains(r#""state":"open""#), "{}", ready.body);
    let fallback = line("ask-or-fallback (breaker open)")[0];
    assert_eq!(fallback.status, 200);
    assert!(
        fallback
            .headers
            .contains(&("x-palisade-degraded".to_owned(), "from_error".to_owned()))
    );
    assert!(line("ask (tool back)").iter().all(|l| l.status == 200));
    let ready = line("readiness (closed again)")[0];
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains(r#""state":"closed""#), "{}", ready.body);
    let slow = line("ask, slow, caller waits 100 ms")[0];
    assert_eq!((slow.status, slow.took), (504, Duration::from_millis(100)));
    assert!(slow.body.contains("deadline of 100 ms exceeded"), "{slow}");
    // The tool was told the time left: 2 s at first, 100 ms for the impatient caller.
    let deadlines = tool.deadlines.lock().unwrap().clone();
    assert_eq!(deadlines.first().map(String::as_str), Some("2000"));
    assert_eq!(deadlines.last().map(String::as_str), Some("100"));
}
