//! Certificates made at test time with rcgen: a CA and leaf certificates it signs (for
//! Postgres, for pgfunnel, for clients), written as PEM files into a test's directory;
//! and with the `openssl` CLI the old ways rcgen cannot (X.509 v1, PostgreSQL's manual's
//! self-signed certificate).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate authority that signs leaf certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, PEM encoded.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA whose certificate's CN is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate with subject CN `cn` valid for the host names / IPs in `sans`.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Leaf {
        self.issue_with(cn, sans, |_| {})
    }

    /// Like `issue`, but valid only in the year 2000.
    pub fn issue_expired(&self, cn: &str, sans: &[&str]) -> Leaf {
        self.issue_with(cn, sans, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2000, 12, 31);
        })
    }

    fn issue_with(
        &self,
        cn: &str,
        sans: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        adjust(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns (cert path, key path).
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = write_pem(dir, &format!("{name}.crt"), &self.cert_pem);
        let key = write_pem(dir, &format!("{name}.key"), &self.key_pem);
        (cert, key)
    }
}

/// Writes `text` to `dir/name` (mode 0600) and returns the path.
pub fn write_pem(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// Runs the `openssl` CLI in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `-newkey` arguments for a P-256 key (fast to make, accepted by Postgres and libpq).
const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// Certificates made with the `openssl` CLI the ways older setups make them and rcgen
/// cannot: X.509 v1 (`openssl x509 -req` without extensions), as PgBouncer and libpq
/// (OpenSSL) accept them. Files are named `<name>.crt` / `<name>.key` in `dir`.
pub struct OpensslCa {
    dir: PathBuf,
    name: String,
    /// The CA certificate file.
    pub cert: PathBuf,
}

impl OpensslCa {
    /// A self-signed X.509 v1 CA (no extensions at all) with CN `cn`.
    pub fn v1(dir: &Path, name: &str, cn: &str) -> OpensslCa {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        let subj = format!("/CN={cn}");
        let mut req = vec!["req", "-new", "-nodes", "-keyout", &key, "-out", &csr];
        req.extend(EC_KEY);
        req.extend(["-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-signkey", &key, "-days", "365", "-out", &crt,
            ],
        );
        let ca = OpensslCa {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            cert: dir.join(crt),
        };
        assert!(is_v1(&ca.cert), "openssl made a v3 CA");
        ca
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("read CA")
    }

    /// An X.509 v1 certificate with subject CN `cn` (so no subjectAltName: host names are
    /// checked against the CN), signed by this CA; its key is new, or `key` when given.
    /// Written as `<name>.crt` / `<name>.key`; returns (cert path, key path).
    pub fn issue_v1(&self, name: &str, cn: &str, key: Option<&Path>) -> (PathBuf, PathBuf) {
        let (crt, csr) = (format!("{name}.crt"), format!("{name}.csr"));
        let key = match key {
            Some(k) => k.to_path_buf(),
            None => self.dir.join(format!("{name}.key")),
        };
        let key_arg = key.display().to_string();
        let subj = format!("/CN={cn}");
        let mut req = vec!["req", "-new", "-out", &csr, "-subj", &subj];
        if key.exists() {
            req.extend(["-key", &key_arg]);
        } else {
            req.extend(["-nodes", "-keyout", &key_arg]);
            req.extend(EC_KEY);
        }
        openssl(&self.dir, &req);
        let (ca_crt, ca_key, serial) = (
            format!("{}.crt", self.name),
            format!("{}.key", self.name),
            format!("{}.srl", self.name),
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAserial",
                &serial,
                "-CAcreateserial",
                "-days",
                "365",
                "-out",
                &crt,
            ],
        );
        let crt = self.dir.join(crt);
        assert!(is_v1(&crt), "openssl made a v3 certificate");
        set_private(&key);
        (crt, key)
    }
}

/// PostgreSQL's manual's self-signed server certificate
/// (`openssl req -new -x509 -days 365 -nodes -subj /CN=<cn>`): a CA certificate
/// (basicConstraints CA:TRUE) that is also the server's own, trusted by naming it as the
/// root certificate. Returns (cert path, key path).
pub fn manual_self_signed(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subj = format!("/CN={cn}");
    let mut req = vec!["req", "-new", "-x509", "-days", "365", "-nodes"];
    req.extend(["-out", &crt, "-keyout", &key, "-subj", &subj]);
    req.extend(EC_KEY);
    openssl(dir, &req);
    let key = dir.join(key);
    set_private(&key);
    (dir.join(crt), key)
}

/// Whether the certificate file holds an X.509 v1 certificate.
pub fn is_v1(cert: &Path) -> bool {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl x509");
    String::from_utf8_lossy(&out.stdout).contains("Version: 1 (0x0)")
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
