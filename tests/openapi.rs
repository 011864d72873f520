//! OpenAPI with the real binary and every installed kubectl (1.27-1.33 under
//! /usr/lib/google-cloud-sdk/bin and /usr/bin/kubectl), each with a fresh cache directory and
//! default flags: `apply -f`, `create -f`, `replace -f`, `edit`, `explain node.spec.taints`, and
//! field validation of a typo'd field; plus the raw endpoints through curl.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Every kubectl to try: the versioned binaries that are installed, then the default one.
fn kubectls() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for minor in 27..=33 {
        let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"));
        if p.is_file() {
            out.push((format!("1{minor}"), p));
        } else {
            skip(
                "openapi kubectl matrix",
                &format!("{} is not installed", p.display()),
            );
        }
    }
    out.push(("default".to_string(), PathBuf::from("kubectl")));
    out
}

/// Runs one kubectl binary with a fresh cache directory and optional environment.
fn run(bin: &Path, kubeconfig: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("--request-timeout=30s")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kubectl")
}

fn ok(bin: &Path, kubeconfig: &Path, args: &[&str], env: &[(&str, &Path)]) -> String {
    let out = run(bin, kubeconfig, args, env);
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  k1: {value}\n"
    )
}

fn service(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n{extra_spec}"
    )
}

#[test]
fn every_kubectl_applies_creates_replaces_edits_explains_and_validates() {
    let (root, _block, s) = start_ready_server("oa1", &[], Duration::from_secs(120));
    let k = &s.kubeconfig;
    let dir = root.path().join("manifests");
    fs::create_dir_all(&dir).unwrap();
    // The editor kubectl edit runs: changes k1's value in the file it is given.
    let editor = dir.join("editor.sh");
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/k1: replaced/k1: edited/' \"$1\"\n",
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    for (tag, bin) in kubectls() {
        let cm = format!("cm-{tag}");
        let file = |name: &str, text: String| {
            let p = dir.join(format!("{name}-{tag}.yaml"));
            fs::write(&p, text).unwrap();
            p.display().to_string()
        };

        // apply -f: create, then a changed manifest is patched in.
        let f = file("cm", configmap(&cm, "v1"));
        let out = ok(&bin, k, &["apply", "-f", &f], &[]);
        assert!(
            out.contains(&format!("configmap/{cm} created")),
            "{tag}: {out}"
        );
        let f = file("cm", configmap(&cm, "v2"));
        let out = ok(&bin, k, &["apply", "-f", &f], &[]);
        assert!(
            out.contains(&format!("configmap/{cm} configured")),
            "{tag}: {out}"
        );
        let got = ok(
            &bin,
            k,
            &["get", "configmap", &cm, "-o", "jsonpath={.data.k1}"],
            &[],
        );
        assert_eq!(got, "v2", "{tag}");

        // replace -f.
        let f = file("cm-replace", configmap(&cm, "replaced"));
        let out = ok(&bin, k, &["replace", "-f", &f], &[]);
        assert!(
            out.contains(&format!("configmap/{cm} replaced")),
            "{tag}: {out}"
        );

        // edit with an editor script.
        let out = ok(
            &bin,
            k,
            &["edit", "configmap", &cm],
            &[("KUBE_EDITOR", &editor)],
        );
        assert!(
            out.contains(&format!("configmap/{cm} edited")),
            "{tag}: {out}"
        );
        let got = ok(
            &bin,
            k,
            &["get", "configmap", &cm, "-o", "jsonpath={.data.k1}"],
            &[],
        );
        assert_eq!(got, "edited", "{tag}");

        // create -f of a Service: validated against the schema (an int targetPort is an
        // IntOrString, ports a keyed list).
        let svc = format!("svc-{tag}");
        let f = file("svc", service(&svc, ""));
        let out = ok(&bin, k, &["create", "-f", &f], &[]);
        assert!(
            out.contains(&format!("service/{svc} created")),
            "{tag}: {out}"
        );

        // apply -f of a changed Pod: kubectl computes a strategic merge patch (containers
        // merged by name) and the server applies it. Only what upstream lets a pod update
        // change is changed: the image and a label.
        let pod = |image: &str, value: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{tag}\n  namespace: default\n  labels:\n    v: \"{value}\"\nspec:\n  containers:\n  - name: a\n    image: {image}\n    env:\n    - name: X\n      value: \"x\"\n    ports:\n    - containerPort: 80\n"
            )
        };
        let f = file("pod", pod("img:1", "1"));
        ok(&bin, k, &["apply", "-f", &f], &[]);
        let f = file("pod", pod("img:2", "2"));
        let out = ok(&bin, k, &["apply", "-f", &f], &[]);
        assert!(
            out.contains(&format!("pod/pod-{tag} configured")),
            "{tag}: {out}"
        );
        let got = ok(
            &bin,
            k,
            &[
                "get",
                "pod",
                &format!("pod-{tag}"),
                "-o",
                "jsonpath={.spec.containers[0].image} {.metadata.labels.v}",
            ],
            &[],
        );
        assert_eq!(got, "img:2 2", "{tag}");

        // A typo'd field: kubectl finds `fieldValidation` on the kind's PATCH operation, so it
        // leaves validation to the server, which refuses the object with upstream's message
        // under the default (strict) validation and stores nothing.
        let bad = format!("bad-{tag}");
        let f = file("bad", service(&bad, "  foo: 1\n"));
        for flags in [
            &["create", "--validate=strict", "-f"][..],
            &["apply", "-f"][..],
        ] {
            let mut args = flags.to_vec();
            args.push(&f);
            let out = run(&bin, k, &args, &[]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{tag} {args:?}: {err}");
            assert!(
                err.contains(
                    "Service in version \"v1\" cannot be handled as a Service: strict decoding error: unknown field \"spec.foo\""
                ),
                "{tag} {args:?}: {err}"
            );
        }
        let out = run(&bin, k, &["get", "service", &bad], &[]);
        assert!(
            !out.status.success(),
            "{tag}: the invalid Service was stored"
        );
        // --validate=warn: stored without the unknown field, and the warning is shown.
        let out = run(&bin, k, &["create", "--validate=warn", "-f", &f], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{tag}: {err}");
        assert!(
            err.contains("Warning: unknown field \"spec.foo\""),
            "{tag}: {err}"
        );
        let stored = ok(&bin, k, &["get", "service", &bad, "-o", "json"], &[]);
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert!(stored["spec"].get("foo").is_none(), "{tag}: {stored}");
        assert_eq!(stored["spec"]["ports"][0]["targetPort"], 8080, "{tag}");

        // explain reads the v3 (or, for old clients, v2) schema.
        let out = ok(&bin, k, &["explain", "node.spec.taints"], &[]);
        assert!(
            out.contains("If specified, the node's taints."),
            "{tag}: {out}"
        );
        assert!(out.contains("effect"), "{tag}: {out}");
        assert!(
            out.contains("Required. The taint key to be applied to a node."),
            "{tag}: {out}"
        );
    }
}

#[test]
fn openapi_endpoints_over_tls() {
    let (_root, _block, s) = start_ready_server("oa2", &[], Duration::from_secs(120));
    let dir = s.data_dir().join("server/tls");
    let cert = dir.join("client-admin.crt");
    let key = dir.join("client-admin.key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let base = format!("https://{}:6443", s.ip);
    let auth = ["--cert", cert.as_str(), "--key", key.as_str()];

    // Anonymous clients get nothing.
    let (code, _) = curl(&format!("{base}/openapi/v2"), &s.ca(), &[]);
    assert_eq!(code, 401);

    let (code, body) = curl(&format!("{base}/openapi/v2"), &s.ca(), &auth);
    assert_eq!(code, 200);
    let v2: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(
        v2["definitions"]["io.k8s.api.core.v1.Node"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Node"
    );

    let (code, body) = curl(&format!("{base}/openapi/v3"), &s.ca(), &auth);
    assert_eq!(code, 200);
    let index: serde_json::Value = serde_json::from_str(&body).unwrap();
    let url = index["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let mut with_headers = auth.to_vec();
    with_headers.push("-D-");
    let (code, text) = curl(&format!("{base}{url}"), &s.ca(), &with_headers);
    assert_eq!(code, 200);
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("cache-control: public, immutable"), "{text}");
    assert!(lower.contains("etag: \""), "{text}");
}
