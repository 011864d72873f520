//! Protobuf on the wire with the real kubectl 1.32/1.33 (the versions whose typed clientset
//! sends and asks for `application/vnd.kubernetes.protobuf`; older versions are run too):
//! `create service`, `drain` of a node with a pod (the pod DELETE body is a protobuf `DeleteOptions`), and a protobuf watch
//! stream read with curl and decoded frame by frame.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use prost::Message;

const READY: Duration = Duration::from_secs(60);

fn ok(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl_run(bin, kubeconfig, args, None);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_create_service_and_drain_speak_protobuf() {
    let (_root, _block, s) = start_ready_server("pb1", &[], READY);
    let k = &s.kubeconfig;
    wait_node_ready(k, "pb1", READY);
    for (version, bin) in installed_kubectls() {
        let svc = format!("svc-{}", version.replace('.', "-"));
        let out = ok(
            &bin,
            k,
            &["create", "service", "clusterip", &svc, "--tcp=80"],
        );
        assert!(
            out.contains(&format!("service/{svc} created")),
            "{version}: {out}"
        );
        let got: serde_json::Value =
            serde_json::from_str(&kubectl_ok(k, &["get", "service", &svc, "-o", "json"])).unwrap();
        assert_eq!(got["spec"]["ports"][0]["port"], 80, "{version}: {got}");
        assert_eq!(
            got["spec"]["ports"][0]["targetPort"], 80,
            "{version}: {got}"
        );
        assert_eq!(
            got["spec"]["selector"]["app"],
            svc.as_str(),
            "{version}: {got}"
        );
        // Zero values Go's JSON leaves out are not invented from the protobuf body.
        assert!(
            got["spec"]["ports"][0].get("nodePort").is_none(),
            "{version}: {got}"
        );

        // A pod bound to the node, owned by a controller (drain's default flags refuse bare
        // pods); it never runs, drain deletes it and waits until it is gone.
        let pod = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{v}","namespace":"default",
                "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs",
                "uid":"00000000-0000-0000-0000-000000000001","controller":true}}]}},
                "spec":{{"nodeName":"pb1","containers":[{{"name":"c","image":"busybox"}}]}}}}"#,
            v = version.replace('.', "-")
        );
        let file = s.dir.join(format!("pod-{version}.json"));
        std::fs::write(&file, pod).unwrap();
        kubectl_ok(
            k,
            &["create", "--validate=false", "-f", file.to_str().unwrap()],
        );
        let out = ok(&bin, k, &["drain", "pb1"]);
        assert!(out.contains("drained"), "{version}: {out}");
        let pods = kubectl_ok(k, &["get", "pods", "-A", "-o", "name"]);
        assert!(!pods.contains("p-"), "{version}: pod still there: {pods}");
        ok(&bin, k, &["uncordon", "pb1"]);
    }
}

/// `Accept: application/vnd.kubernetes.protobuf` on a list, a get and a watch: protobuf
/// envelopes and length-prefixed WatchEvent frames, decodable by the same rules as upstream's.
#[test]
fn protobuf_responses_and_watch_frames() {
    let (_root, _block, s) = start_ready_server("pb2", &[], READY);
    let tls = s.data_dir().join("server/tls");
    let get = |path: &str, accept: &str| -> (String, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(s.ca())
            .arg("--cert")
            .arg(tls.join("client-admin.crt"))
            .arg("--key")
            .arg(tls.join("client-admin.key"))
            .args(["-H", &format!("Accept: {accept}"), "-D", "-", "-o"])
            .arg(s.dir.join("body"))
            .arg(format!("https://{}:6443{path}", s.ip))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        let ct = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-type:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        (ct, std::fs::read(s.dir.join("body")).unwrap())
    };
    let pb = "application/vnd.kubernetes.protobuf,application/json";
    let (ct, body) = get("/api/v1/nodes/pb2", pb);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let node = rke2::apiserver::protobuf::decode_to_json(&body).unwrap();
    assert_eq!(node["metadata"]["name"], "pb2");
    assert_eq!(node["kind"], "Node");

    let (ct, body) = get("/api/v1/namespaces", pb);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    assert!(body.starts_with(b"k8s\0"));
    let env = rke2::registry::protobuf::Unknown::decode(&body[4..]).unwrap();
    assert_eq!(env.type_meta.unwrap().kind, "NamespaceList");
    let list =
        rke2::registry::protobuf::decode("k8s.io.api.core.v1.NamespaceList", &env.raw).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"kube-system"), "{names:?}");

    // Errors too are protobuf Status objects for protobuf clients.
    let (ct, body) = get("/api/v1/nodes/nope", pb);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let env = rke2::registry::protobuf::Unknown::decode(&body[4..]).unwrap();
    assert_eq!(env.type_meta.unwrap().kind, "Status");
    let status =
        rke2::registry::protobuf::decode("k8s.io.apimachinery.pkg.apis.meta.v1.Status", &env.raw)
            .unwrap();
    assert_eq!(status["code"], 404, "{status:?}");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "nodes \"nope\" not found");

    // JSON stays the answer for JSON clients.
    let (ct, _) = get("/api/v1/nodes/pb2", "application/json");
    assert_eq!(ct, "application/json");

    let (ct, body) = get("/api/v1/namespaces?watch=1&timeoutSeconds=2", pb);
    assert_eq!(ct, "application/vnd.kubernetes.protobuf;stream=watch");
    let mut rest = body.as_slice();
    let mut seen = Vec::new();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let ev = rke2::registry::protobuf::WatchEvent::decode(&rest[4..4 + len]).unwrap();
        let obj = rke2::apiserver::protobuf::decode_to_json(&ev.object.unwrap().raw).unwrap();
        seen.push((
            ev.r#type,
            obj["metadata"]["name"].as_str().unwrap().to_string(),
        ));
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "trailing partial frame");
    assert!(
        seen.contains(&("ADDED".to_string(), "default".to_string())),
        "{seen:?}"
    );
}
