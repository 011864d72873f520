//! Server-token rotations on one server are serialised: concurrent rotation requests (real
//! binary, real etcd, real curl) each start from the token the previous one installed, so all
//! succeed instead of failing as concurrent, and the token file ends on one of them.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn concurrent_rotations_on_one_server_all_succeed_in_turn() {
    let (_root, _block, s1) = start_ready_server(
        "s1",
        &[("token", "serial-token-0".into())],
        Duration::from_secs(120),
    );
    let url = format!("{}/v1-rke2/token", s1.supervisor());
    let ca = s1.ca();
    let news: Vec<String> = (1..=4).map(|i| format!("serial-token-{i}")).collect();
    let results: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = news
            .iter()
            .map(|new| {
                let (url, ca) = (&url, &ca);
                scope.spawn(move || {
                    curl(
                        url,
                        ca,
                        &[
                            "-u",
                            "server:serial-token-0",
                            "-X",
                            "PUT",
                            "--data",
                            &format!("{{\"newToken\":\"{new}\"}}"),
                        ],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, body) in &results {
        assert_eq!(*code, 200, "{body}");
    }
    // The token file follows the last rotation: one of the new tokens, usable on the API.
    let token = wait_for(Duration::from_secs(20), "the token file to settle", || {
        let t = s1.token();
        news.iter()
            .any(|n| t.ends_with(&format!("::server:{n}")))
            .then_some(t)
    });
    let password = token.rsplit_once("::server:").unwrap().1.to_string();
    let (code, body) = curl(
        &format!("{}/db/info", s1.supervisor()),
        &ca,
        &["-u", &format!("server:{password}")],
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = curl(
        &format!("{}/db/info", s1.supervisor()),
        &ca,
        &["-u", "server:serial-token-0"],
    );
    assert_eq!(code, 401);
}
