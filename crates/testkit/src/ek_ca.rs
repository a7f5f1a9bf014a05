//! EK certificates made by swtpm's own tools: a local CA from `swtpm_localca` (a root and an
//! intermediate that signs), and `swtpm_setup --create-ek-cert`, which creates the TPM's RSA and
//! ECC EKs, persists them (0x81010001, 0x81010016) and writes their certificates to NV
//! (0x01c00002, 0x01c00016), as a TPM maker provisions a TPM.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::no_inherited_fds;

/// When the EK certificates a swtpm gets are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertDates {
    /// From now on, without end (`swtpm_localca`'s own choice).
    Current,
    /// Issued 400 days ago for 30 days: expired. `swtpm_setup` runs under `faketime`, with a
    /// `swtpm_cert` in front of the real one that asks for 30 days instead of no end.
    Expired,
}

/// A local EK CA in a temp dir of its own.
pub struct LocalCa {
    dir: tempfile::TempDir,
}

impl LocalCa {
    /// Creates the CA (its root and signing intermediate) with `swtpm_localca`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("ek-ca-").tempdir().expect("CA temp dir");
        let ca = Self { dir };
        std::fs::write(
            ca.path("localca.conf"),
            format!(
                "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\ncertserial = {0}/certserial\n",
                ca.path("state").display()
            ),
        )
        .expect("write localca.conf");
        std::fs::write(ca.path("localca.options"), "").expect("write localca.options");
        std::fs::write(
            ca.path("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                ca.path("localca.conf").display(),
                ca.path("localca.options").display()
            ),
        )
        .expect("write swtpm_setup.conf");
        // A throwaway certificate makes swtpm_localca create the CA now, at today's date.
        std::fs::create_dir_all(ca.path("first")).unwrap();
        let modulus = "c".repeat(512);
        run(
            Command::new("swtpm_localca")
                .args(["--type", "ek", "--ek", &modulus, "--dir"])
                .arg(ca.path("first"))
                .arg("--configfile")
                .arg(ca.path("localca.conf"))
                .arg("--optsfile")
                .arg(ca.path("localca.options"))
                .args(["--tpm2", "--tpm-spec-family", "2.0", "--tpm-spec-level", "0", "--tpm-spec-revision", "164"])
                .args(["--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm", "--tpm-version", "id:20191023"]),
            "swtpm_localca",
        );
        ca
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The root CA certificate (PEM).
    pub fn root_pem(&self) -> PathBuf {
        self.path("state/swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate that signs EK certificates (PEM).
    pub fn issuer_pem(&self) -> PathBuf {
        self.path("state/issuercert.pem")
    }

    /// A trust bundle with the root and the intermediate, as a TPM maker publishes them.
    pub fn trust_bundle(&self) -> PathBuf {
        let bundle = self.path("bundle.pem");
        let mut pem = std::fs::read(self.root_pem()).expect("root CA certificate");
        pem.extend(std::fs::read(self.issuer_pem()).expect("issuer certificate"));
        std::fs::write(&bundle, pem).expect("write the bundle");
        bundle
    }

    /// Manufactures a TPM in `state`: EKs created and persisted, certificates in NV.
    pub fn manufacture(&self, state: &Path, dates: CertDates) {
        let mut command = match dates {
            CertDates::Current => Command::new("swtpm_setup"),
            CertDates::Expired => {
                let shim = self.path("shim");
                std::fs::create_dir_all(&shim).unwrap();
                let script = shim.join("swtpm_cert");
                std::fs::write(
                    &script,
                    "#!/bin/sh\n# swtpm_localca asks for no end date; ask for 30 days.\nfor a in \"$@\"; do shift; if [ \"$prev\" = --days ]; then a=30; fi; prev=\"$a\"; set -- \"$@\" \"$a\"; done\nexec /usr/bin/swtpm_cert \"$@\"\n",
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
                let mut c = Command::new("faketime");
                let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default());
                c.args(["-f", "-400d", "swtpm_setup"]).env("PATH", path);
                c
            }
        };
        command
            .args(["--tpm2", "--create-ek-cert", "--tpmstate"])
            .arg(state)
            .arg("--config")
            .arg(self.path("swtpm_setup.conf"))
            .arg("--logfile")
            .arg(state.join("swtpm_setup.log"));
        let what = if dates == CertDates::Expired { "faketime swtpm_setup (install faketime)" } else { "swtpm_setup" };
        run(&mut command, what);
    }
}

impl Default for LocalCa {
    fn default() -> Self {
        Self::new()
    }
}

fn run(command: &mut Command, what: &str) {
    let out = no_inherited_fds(command)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({e}); install swtpm-tools"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
