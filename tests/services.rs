//! Services with the real `rke2` binary, real etcd and the real kubectl (issue 13 item 3, API
//! side): ClusterIPs from `service-cidr`, node ports from `service-node-port-range`, upstream's
//! 422s for taken or out-of-range requests, release on delete (docs/services.md).

mod common;

use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn services_get_unique_addresses_and_ports_from_their_ranges() {
    let (root, _block, s) = start_ready_server(
        "svc1",
        &[
            ("token", "svc-token".into()),
            ("cluster-cidr", "198.18.0.0/16".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("service-node-port-range", "31000-31002".into()),
        ],
        READY,
    );
    let k = &s.kubeconfig;
    let ip_of =
        |name: &str| kubectl_ok(k, &["get", "svc", name, "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(ip_of("kubernetes"), "198.19.0.1");

    // A dynamic address: inside the range, not the kubernetes service's.
    kubectl_ok(k, &["create", "service", "clusterip", "x", "--tcp=80"]);
    let x_ip = ip_of("x");
    assert!(
        x_ip.starts_with("198.19.") && x_ip != "198.19.0.1",
        "{x_ip}"
    );
    let spec = kubectl_ok(
        k,
        &[
            "get",
            "svc",
            "x",
            "-o",
            "jsonpath={.spec.type} {.spec.sessionAffinity} {.spec.internalTrafficPolicy} {.spec.ipFamilies[0]} {.spec.ports[0].targetPort}",
        ],
    );
    assert_eq!(spec, "ClusterIP None Cluster IPv4 80");

    // Another Service asking for x's address is refused like upstream.
    let y = kubectl(
        k,
        &[
            "create",
            "service",
            "clusterip",
            "y",
            "--tcp=80",
            &format!("--clusterip={x_ip}"),
        ],
    );
    assert!(!y.status.success());
    assert!(
        stderr(&y).contains("provided IP is already allocated"),
        "{}",
        stderr(&y)
    );
    let out = kubectl(
        k,
        &[
            "create",
            "service",
            "clusterip",
            "z",
            "--tcp=80",
            "--clusterip=10.0.0.5",
        ],
    );
    assert!(
        stderr(&out).contains("is not in the valid range"),
        "{}",
        stderr(&out)
    );
    // Headless.
    kubectl_ok(
        k,
        &["create", "service", "clusterip", "h", "--clusterip=None"],
    );
    assert_eq!(ip_of("h"), "None");

    // NodePort: a port from the configured range, shown by `kubectl get svc -o wide`.
    kubectl_ok(k, &["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let port: u16 = kubectl_ok(
        k,
        &[
            "get",
            "svc",
            "np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
    )
    .parse()
    .unwrap();
    assert!((31000..=31002).contains(&port), "{port}");
    let wide = kubectl_ok(k, &["get", "svc", "np", "-o", "wide"]);
    assert!(wide.contains("SELECTOR"), "{wide}");
    assert!(wide.contains(&format!("80:{port}/TCP")), "{wide}");
    assert!(wide.contains("app=np"), "{wide}");
    let taken = kubectl(
        k,
        &[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80",
            &format!("--node-port={port}"),
        ],
    );
    assert!(
        stderr(&taken).contains("provided port is already allocated"),
        "{}",
        stderr(&taken)
    );

    // `kubectl expose` of a pod: an address, and once the pod has an IP (set through the
    // status subresource as its node would; a scheduling gate keeps it off every node, so no
    // node runtime reports its status but this test), Endpoints and an EndpointSlice listing it with the
    // named target port resolved; not ready first, then ready.
    let pod = root.path().join("web.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  schedulingGates:\n  - name: test.rke2.io/kubelet-is-this-test\n  containers:\n  - name: c\n    image: busybox:1.36\n    ports:\n    - {name: http, containerPort: 8080}\n",
    )
    .unwrap();
    kubectl_ok(
        k,
        &["apply", "--validate=false", "-f", pod.to_str().unwrap()],
    );
    kubectl_ok(
        k,
        &["expose", "pod", "web", "--port=80", "--target-port=http"],
    );
    assert!(ip_of("web").starts_with("198.19."));
    let set_status = |ready: &str| {
        let patch = format!(
            r#"{{"status":{{"phase":"Running","podIP":"198.18.7.9","podIPs":[{{"ip":"198.18.7.9"}}],"conditions":[{{"type":"Ready","status":"{ready}"}}]}}}}"#
        );
        kubectl_ok(
            k,
            &[
                "patch",
                "pod",
                "web",
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
        );
    };
    set_status("False");
    wait_for(READY, "web's not-ready address in its Endpoints", || {
        let ep = kubectl_ok(
            k,
            &[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[0].notReadyAddresses[0].ip}:{.subsets[0].ports[0].port}",
            ],
        );
        (ep == "198.18.7.9:8080").then_some(())
    });
    set_status("True");
    wait_for(
        READY,
        "web's ready address in its Endpoints and EndpointSlice",
        || {
            let ep = kubectl_ok(
                k,
                &[
                    "get",
                    "endpoints",
                    "web",
                    "-o",
                    "jsonpath={.subsets[0].addresses[0].ip}",
                ],
            );
            let slice = kubectl_ok(
                k,
                &[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=web",
                    "-o",
                    r"jsonpath={.items[0].endpoints[0].addresses[0]} {.items[0].endpoints[0].conditions.ready} {.items[0].ports[0].port} {.items[0].metadata.labels.endpointslice\.kubernetes\.io/managed-by}",
                ],
            );
            (ep == "198.18.7.9" && slice == "198.18.7.9 true 8080 endpointslice-controller.k8s.io")
                .then_some(())
        },
    );
    let table = kubectl_ok(
        k,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
    );
    assert!(
        table.contains("IPv4") && table.contains("198.18.7.9"),
        "{table}"
    );
    // The kubernetes service keeps its own endpoints: every server's API port.
    // Its reconciler runs on its own period, so it may not have written them yet.
    wait_for(READY, "the kubernetes service's Endpoints", || {
        let api = kubectl(
            k,
            &[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[0].ports[0].port}",
            ],
        );
        (api.status.success() && String::from_utf8_lossy(&api.stdout) == "6443").then_some(())
    });
    // ...and the same as an EndpointSlice, which service proxies and DNS read.
    wait_for(READY, "the kubernetes service's EndpointSlice", || {
        let slice = kubectl(
            k,
            &[
                "get",
                "endpointslice",
                "kubernetes",
                "-o",
                r"jsonpath={.metadata.labels.kubernetes\.io/service-name} {.ports[0].port} {.endpoints[0].conditions.ready}",
            ],
        );
        (slice.status.success() && String::from_utf8_lossy(&slice.stdout) == "kubernetes 6443 true")
            .then_some(())
    });
    // Deleting the service removes its Endpoints and EndpointSlice.
    kubectl_ok(k, &["delete", "svc", "web"]);
    wait_for(READY, "web's Endpoints and EndpointSlice to go", || {
        let left = kubectl_ok(
            k,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "name",
            ],
        );
        let ep = kubectl(k, &["get", "endpoints", "web"]);
        (left.is_empty() && !ep.status.success()).then_some(())
    });

    // Deleting x releases its address: y may now have it.
    kubectl_ok(k, &["delete", "svc", "x"]);
    kubectl_ok(
        k,
        &[
            "create",
            "service",
            "clusterip",
            "y",
            "--tcp=80",
            &format!("--clusterip={x_ip}"),
        ],
    );
    assert_eq!(ip_of("y"), x_ip);
    // And the node port of a deleted NodePort service is free again.
    kubectl_ok(k, &["delete", "svc", "np"]);
    kubectl_ok(
        k,
        &[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80",
            &format!("--node-port={port}"),
        ],
    );

    // Deleting a namespace frees its Services' addresses.
    kubectl_ok(k, &["create", "namespace", "gone"]);
    let args = [
        "create",
        "service",
        "clusterip",
        "q",
        "--tcp=80",
        "--clusterip=198.19.0.77",
    ];
    kubectl_ok(k, &[&args[..], &["-n", "gone"]].concat());
    let again = kubectl(k, &args);
    assert!(
        stderr(&again).contains("provided IP is already allocated"),
        "{}",
        stderr(&again)
    );
    kubectl_ok(k, &["delete", "namespace", "gone"]);
    kubectl_ok(k, &args);
    assert_eq!(ip_of("q"), "198.19.0.77");
}
