//! The examples' programs, run on tokio's paused clock so that they cannot rot.

#[path = "../examples/llm_client/demo.rs"]
#[allow(dead_code, unreachable_pub)]
mod llm_client;

use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn llm_client_palisade_answers_what_the_bare_client_cannot() {
    let report = llm_client::run(12).await.unwrap();
    println!("{report}");
    let ok = |o: &[llm_client::Outcome]| o.iter().filter(|o| o.status == Some(200)).count();
    // Bare: every fault reaches the caller (429s, 503s; the stalls answer, late).
    assert_eq!(ok(&report.bare), 8);
    assert!(report.bare.iter().all(|o| o.calls == 1));
    assert_eq!(report.bare[5].took, Duration::from_secs(3));
    // palisade: all but request 9 (down every time) answered.
    assert_eq!(ok(&report.palisade), 11);
    assert_eq!(report.palisade[9].status, Some(503));
    assert_eq!(report.palisade[9].calls, 3);
    // The 429 waited the server's 150 ms, the stall was cut at 500 ms.
    assert_eq!(report.palisade[1].took, Duration::from_millis(150));
    assert_eq!(report.palisade[1].calls, 2);
    assert_eq!(report.palisade[5].calls, 2);
    assert!(
        report.palisade[5].took < Duration::from_secs(1),
        "{:?}",
        report.palisade[5]
    );
}
