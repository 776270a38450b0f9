//! The deployment files under deploy/ and the Dockerfile: the Kubernetes config loads as a
//! pgfunnel config, the manifests' ports and probes match it, the Kustomize base and
//! overlay render and validate against the Kubernetes schemas (`kubectl kustomize`,
//! `kubernetes-validate` from PyPI), and the image builds where a container builder runs.
//! Steps whose tool is missing are skipped with a message.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgfunnel::config::Config;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// The venv `scripts/test.sh` installs kubernetes-validate and PyYAML into.
fn venv_bin(name: &str) -> Option<PathBuf> {
    let p = root().join("target/k8s-venv/bin").join(name);
    p.exists().then_some(p)
}

/// Validates a YAML stream against the Kubernetes schemas; skipped with a message without
/// kubernetes-validate.
fn validate(what: &str, yaml: &str) {
    let tool =
        venv_bin("kubernetes-validate").unwrap_or_else(|| PathBuf::from("kubernetes-validate"));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), yaml).expect("write yaml");
    match Command::new(tool)
        .args(["--strict", "--quiet"])
        .arg(file.path())
        .output()
    {
        Ok(v) => assert!(
            v.status.success(),
            "{what} does not validate: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        ),
        Err(_) => eprintln!(
            "skipped: kubernetes-validate not found (scripts/test.sh installs it into target/k8s-venv)"
        ),
    }
}

/// Every document of a YAML stream as JSON, through python3's yaml module; `None` (with a
/// message) when python3 or its yaml module is missing.
fn yaml_docs(text: &str) -> Option<Vec<Value>> {
    let python = venv_bin("python3").unwrap_or_else(|| PathBuf::from("python3"));
    let script = "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
    let child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipped: python3 not found");
        return None;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write yaml");
    let out = child.wait_with_output().expect("python3 runs");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named"),
            "YAML does not parse: {err}"
        );
        eprintln!("skipped: python3 has no yaml module");
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("json from python3"))
}

/// The base config with /etc/pgfunnel/ moved into `dir`, loaded as pgfunnel would.
fn load_base_config(dir: &Path) -> Config {
    let base = k8s().join("base");
    let prefix = format!("{}/", dir.display());
    for (from, to) in [
        ("pgfunnel.ini", "config/pgfunnel.ini"),
        ("databases.ini", "config/databases.ini"),
        ("userlist.txt", "auth/userlist.txt"),
    ] {
        let text = std::fs::read_to_string(base.join(from)).expect("read base file");
        let target = dir.join(to);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, text.replace("/etc/pgfunnel/", &prefix)).expect("write");
    }
    Config::load(&dir.join("config/pgfunnel.ini"))
        .unwrap_or_else(|e| panic!("deploy/kubernetes/base/pgfunnel.ini does not load: {e}"))
}

fn port_of(listen: &str) -> u64 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

#[test]
fn kubernetes_manifests_match_the_config_they_ship() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load_base_config(dir.path());
    let s = &config.settings;
    let metrics = port_of(s.metrics_listen.as_deref().expect("metrics_listen set"));
    assert!(s.peers_dns.is_some() && s.fleet_max_db_connections > 0);
    let text = std::fs::read_to_string(k8s().join("base/deployment.yaml")).expect("read");
    let Some(docs) = yaml_docs(&text) else { return };
    let spec = &docs[0]["spec"]["template"];
    let pod = &spec["spec"];
    let c = &pod["containers"][0];
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no {name} port"))
    };
    assert_eq!(port("postgres"), u64::from(s.listen_port));
    assert_eq!(port("metrics"), metrics);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/live");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["port"], "metrics",
            "{probe} on the metrics port"
        );
    }
    let notes = &spec["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/port"], metrics.to_string());
    assert_eq!(notes["prometheus.io/path"], "/metrics");
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(grace > pre_stop + 30, "the drain gets time after preStop");
    assert_eq!(
        c["args"][0], "/etc/pgfunnel/config/pgfunnel.ini",
        "the container reads the ConfigMap's file"
    );
    let peers = std::fs::read_to_string(k8s().join("base/service-peers.yaml")).expect("read");
    let Some(peers) = yaml_docs(&peers) else {
        return;
    };
    assert_eq!(
        peers[0]["spec"]["clusterIP"], "None",
        "peers_dns needs a headless Service"
    );
    assert_eq!(
        peers[0]["metadata"]["name"],
        s.peers_dns.clone().expect("peers_dns").as_str()
    );
}

#[test]
fn kubernetes_base_resources_validate_against_the_schemas() {
    for f in [
        "deployment.yaml",
        "service.yaml",
        "service-peers.yaml",
        "pdb.yaml",
    ] {
        let text = std::fs::read_to_string(k8s().join("base").join(f)).expect("read");
        validate(f, &text);
    }
}

#[test]
fn kustomize_base_and_overlay_render_and_validate() {
    for dir in ["base", "overlays/example"] {
        let out = match Command::new("kubectl")
            .args(["kustomize"])
            .arg(k8s().join(dir))
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                eprintln!("skipped: kubectl not found (kustomize rendering)");
                return;
            }
        };
        assert!(
            out.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout).expect("utf-8");
        if let Some(docs) = yaml_docs(&rendered) {
            let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
            for kind in [
                "ConfigMap",
                "Secret",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
            ] {
                assert!(kinds.contains(&kind), "{dir} renders a {kind}: {kinds:?}");
            }
        }
        validate(dir, &rendered);
    }
}

#[test]
fn systemd_instance_config_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = root().join("deploy/systemd");
    let prefix = format!("{}/", dir.path().display());
    for f in ["1.ini", "common.ini"] {
        let text = std::fs::read_to_string(src.join(f)).expect("read");
        let text = text
            .replace("/etc/pgfunnel/", &prefix)
            .replace("/run/pgfunnel/", &prefix);
        std::fs::write(dir.path().join(f), text).expect("write");
    }
    std::fs::write(dir.path().join("userlist.txt"), "\"app\" \"x\"\n").expect("write");
    // systemd's RuntimeDirectory= creates the instance's directory.
    std::fs::create_dir(dir.path().join("1")).expect("runtime dir");
    let config = Config::load(&dir.path().join("1.ini")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.settings.so_reuseport);
    assert_eq!(
        config.settings.peer_id,
        pgfunnel::config::PeerIdSetting::Fixed(1)
    );
    assert_eq!(config.peers.len(), 4, "the [peers] list holds every slot");
    let unit = std::fs::read_to_string(src.join("pgfunnel@.service")).expect("read unit");
    assert!(
        unit.contains("KillSignal=SIGTERM"),
        "stop drains (WAIT_FOR_CLIENTS)"
    );
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "a build stage and a run stage: {froms:?}");
    assert!(
        froms[0].ends_with(" AS build"),
        "the first stage is named build: {}",
        froms[0]
    );
    let run_stage = froms.last().expect("a run stage");
    assert!(
        run_stage.contains("distroless") || run_stage.contains("-slim"),
        "the run stage is distroless or Debian slim: {run_stage}"
    );
    let last_stage: Vec<&&str> = instructions
        .iter()
        .skip_while(|l| !std::ptr::eq(**l, **run_stage))
        .collect();
    assert!(
        last_stage
            .iter()
            .any(|l| l.starts_with("COPY --from=build ")),
        "the run stage copies only the built binary"
    );
    let user = last_stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the run stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid != "0" && uid != "root" && !uid.is_empty(),
        "the image runs as a non-root user, not {user:?}"
    );
    assert!(
        instructions.contains(&"STOPSIGNAL SIGTERM"),
        "docker stop drains"
    );
}

#[test]
fn dockerfile_builds_where_a_builder_runs() {
    let up = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        eprintln!("skipped: no container builder (`docker info` finds no running engine)");
        return;
    }
    if std::env::var_os("PGFUNNEL_SKIP_DOCKER_BUILD").is_some() {
        eprintln!("skipped: PGFUNNEL_SKIP_DOCKER_BUILD is set");
        return;
    }
    let status = Command::new("docker")
        .args(["build", "-t", "pgfunnel:test"])
        .arg(root())
        .status()
        .expect("docker build runs");
    assert!(status.success(), "docker build failed");
}
