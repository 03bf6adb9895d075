//! Deployment files over the real tools: the systemd units through `systemd-analyze verify`
//! and `security`, the packaged configuration through `linesentry validate`, and the Debian
//! package built by `packaging/build-deb` from this build's binary, installed, upgraded and
//! purged with `dpkg --root` in a throwaway root.
//!
//! Host architecture only, so CI needs no cross build; `scripts/arm-test` and `cross/build`
//! cover the ARM targets. Needs the Debian packages systemd (systemd-analyze), dpkg and
//! binutils (readelf), which scripts/test installs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_linesentry");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Runs a command with no stdin (dpkg must never wait for an answer) and returns its output.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (scripts/test installs it)"))
}

/// Like [`run`], and fails the test unless the command succeeded.
fn ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn is_root() -> bool {
    let out = ok(Command::new("id").arg("-u"));
    text(&out.stdout).trim() == "0"
}

/// The unit files with their /usr/bin paths pointing at this build's binary:
/// `systemd-analyze verify` insists that every Exec binary exists.
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    ["linesentry.service", "linesentry-collector.service"]
        .iter()
        .map(|name| {
            let unit = fs::read_to_string(repo("systemd").join(name)).unwrap();
            let unit = unit
                .replace("/usr/bin/linesentry-collector", BIN)
                .replace("/usr/bin/linesentry ", &format!("{BIN} "));
            let path = dir.join(name);
            fs::write(&path, unit).unwrap();
            path
        })
        .collect()
}

#[test]
fn both_units_pass_systemd_analyze_verify_without_a_warning() {
    let dir = TempDir::new().unwrap();
    let units = units_for_verify(dir.path());
    let out = ok(Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .args(&units)
        .current_dir(dir.path()));
    // verify exits 0 on unknown keys and bad values, and only says so on stderr.
    assert_eq!(text(&out.stderr), "", "systemd-analyze verify warned");
}

#[test]
fn both_units_keep_their_systemd_analyze_security_exposure_at_or_below_2() {
    let dir = TempDir::new().unwrap();
    for unit in units_for_verify(dir.path()) {
        let out = run(Command::new("systemd-analyze")
            // --threshold is in tenths: fail above an exposure of 2.0.
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&unit)
            .current_dir(dir.path()));
        let report = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {report}{}",
            unit.display(),
            text(&out.stderr)
        );
        let level: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
        assert!(
            level <= 2.0,
            "{}: exposure {level}\n{report}",
            unit.display()
        );
    }
}

#[test]
fn the_agent_unit_runs_validate_before_start_and_keeps_its_store_in_the_state_directory() {
    let unit = fs::read_to_string(repo("systemd/linesentry.service")).unwrap();
    let config: toml::Table = fs::read_to_string(repo("packaging/agent.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/linesentry validate --config /etc/linesentry/agent.toml",
        "ExecStart=/usr/bin/linesentry run --config /etc/linesentry/agent.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=linesentry",
        "ConfigurationDirectory=linesentry",
        "User=linesentry",
        "SupplementaryGroups=dialout",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert_eq!(
        config["agent"]["data_dir"].as_str(),
        Some("/var/lib/linesentry")
    );
    assert_eq!(
        config["agent"]["profiles_dir"].as_str(),
        Some("/usr/share/linesentry/devices")
    );
}

/// The packaged config, and the same with its commented example stations switched on,
/// against the shipped profiles.
#[test]
fn the_packaged_config_and_its_commented_stations_pass_validate() {
    let dir = TempDir::new().unwrap();
    let shipped = fs::read_to_string(repo("packaging/agent.toml")).unwrap();
    let devices = repo("devices");
    let as_is = shipped.replace("/usr/share/linesentry/devices", devices.to_str().unwrap());
    let with_stations: String = as_is
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if l.starts_with("# [[stations]]") || is_station_key(rest) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(with_stations.matches("\n[[stations]]").count() >= 2);
    for (name, config) in [("as-is.toml", as_is), ("stations.toml", with_stations)] {
        let path = dir.path().join(name);
        fs::write(&path, config).unwrap();
        let out = ok(Command::new(BIN).arg("validate").arg("--config").arg(&path));
        assert!(text(&out.stdout).contains(": ok"), "{}", text(&out.stdout));
    }
}

fn is_station_key(line: &str) -> bool {
    let key = line.split(" = ").next().unwrap_or("");
    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

fn host_deb_arch() -> String {
    let out = ok(Command::new("dpkg").arg("--print-architecture"));
    text(&out.stdout).trim().to_owned()
}

/// `packaging/build-deb --bin-dir` over a directory holding this build's agent (and a
/// stand-in collector when asked), uncompressed to keep the test quick.
fn build_deb(out_dir: &Path, version: &str, with_collector: bool) -> PathBuf {
    let bins = out_dir.join(format!("bins-{version}"));
    fs::create_dir_all(&bins).unwrap();
    fs::copy(BIN, bins.join("linesentry")).unwrap();
    if with_collector {
        fs::copy(BIN, bins.join("linesentry-collector")).unwrap();
    }
    let out = ok(Command::new(repo("packaging/build-deb"))
        .arg("--bin-dir")
        .arg(&bins)
        .args([
            "--arch",
            &host_deb_arch(),
            "--version",
            version,
            "--compress",
            "none",
        ])
        .arg("--out")
        .arg(out_dir));
    let deb = PathBuf::from(text(&out.stdout).trim());
    assert!(deb.is_file(), "build-deb printed {}", deb.display());
    deb
}

fn contents(deb: &Path) -> Vec<(String, String, String)> {
    let out = ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    // drwxr-xr-x root/root 0 2026-11-28 10:00 ./usr/bin/
    text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5]
                .trim_start_matches('.')
                .trim_end_matches('/')
                .to_owned();
            (path, f[0].to_owned(), f[1].to_owned())
        })
        .collect()
}

#[test]
fn the_package_holds_the_agent_units_config_and_profiles_owned_by_root() {
    let dir = TempDir::new().unwrap();
    let deb = build_deb(dir.path(), "0.1.0", false);
    let files = contents(&deb);
    let mode_of = |path: &str| {
        files.iter().find(|(p, _, _)| p == path).map_or_else(
            || panic!("{path} not in the package: {files:#?}"),
            |(_, m, _)| m.as_str(),
        )
    };
    assert_eq!(mode_of("/usr/bin/linesentry"), "-rwxr-xr-x");
    assert_eq!(
        mode_of("/lib/systemd/system/linesentry.service"),
        "-rw-r--r--"
    );
    assert_eq!(mode_of("/usr/lib/sysusers.d/linesentry.conf"), "-rw-r--r--");
    assert_eq!(mode_of("/etc/linesentry/agent.toml"), "-rw-r--r--");
    for profile in fs::read_dir(repo("devices")).unwrap() {
        let name = profile.unwrap().file_name().into_string().unwrap();
        mode_of(&format!("/usr/share/linesentry/devices/{name}"));
    }
    assert!(files.iter().all(|(_, _, owner)| owner == "root/root"));
    // No collector in this build: neither its binary nor its unit.
    assert!(!files.iter().any(|(p, _, _)| p.contains("collector")));

    let field = |name: &str| {
        let out = ok(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "linesentry");
    assert_eq!(field("Version"), "0.1.0");
    assert_eq!(field("Architecture"), host_deb_arch());
    let conffiles = ok(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(text(&conffiles.stdout), "/etc/linesentry/agent.toml\n");
}

#[test]
fn the_package_carries_the_collector_and_its_unit_when_the_build_has_one() {
    let dir = TempDir::new().unwrap();
    let deb = build_deb(dir.path(), "0.1.0", true);
    let files: Vec<String> = contents(&deb).into_iter().map(|(p, _, _)| p).collect();
    for path in [
        "/usr/bin/linesentry-collector",
        "/lib/systemd/system/linesentry-collector.service",
        "/usr/lib/sysusers.d/linesentry-collector.conf",
    ] {
        assert!(
            files.iter().any(|p| p == path),
            "{path} missing: {files:#?}"
        );
    }
}

/// A throwaway root with an empty dpkg database. Maintainer scripts run outside it
/// (`--force-script-chrootless`) with DPKG_ROOT set, as Debian's bootstrap tools do.
struct Root {
    dir: TempDir,
}

impl Root {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("var/lib/dpkg/status"), "").unwrap();
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    fn dpkg(&self, args: &[&str], deb: Option<&Path>) -> Output {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", self.dir.path().display()))
            .arg(format!("--log={}", self.path("dpkg.log").display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(["--force-confdef", "--force-confold"]);
        if !is_root() {
            cmd.arg("--force-not-root");
        }
        cmd.args(args);
        if let Some(deb) = deb {
            cmd.arg(deb);
        }
        ok(&mut cmd)
    }
}

fn uid_of(root: &Root, user: &str) -> Option<u32> {
    fs::read_to_string(root.path("etc/passwd"))
        .ok()?
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .and_then(|f| f[2].parse().ok())
}

/// The packaged deb rebuilt with another version and, if given, another packaged config.
fn repack(deb: &Path, dir: &Path, version: &str, config: Option<&str>) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    ok(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(deb)
        .arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&control, text).unwrap();
    if let Some(config) = config {
        fs::write(tree.join("etc/linesentry/agent.toml"), config).unwrap();
    }
    let out = dir.join(format!("linesentry_{version}.deb"));
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "--build"])
        .arg(&tree)
        .arg(&out));
    out
}

#[test]
fn dpkg_installs_the_package_keeps_a_changed_config_on_upgrade_and_purges_the_store() {
    let dir = TempDir::new().unwrap();
    let deb = build_deb(dir.path(), "0.1.0", false);
    let root = Root::new();

    // Install: files, the user, the state directory, the unit enabled.
    root.dpkg(&["--install"], Some(&deb));
    let bin = root.path("usr/bin/linesentry");
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read(root.path("etc/linesentry/agent.toml")).unwrap(),
        fs::read(repo("packaging/agent.toml")).unwrap()
    );
    assert!(root
        .path("usr/share/linesentry/devices/stamping_press.toml")
        .is_file());
    let uid = uid_of(&root, "linesentry").expect("postinst created the linesentry user");
    let state = fs::metadata(root.path("var/lib/linesentry")).unwrap();
    assert_eq!(state.permissions().mode() & 0o777, 0o750);
    if is_root() {
        assert_eq!(
            state.uid(),
            uid,
            "the state directory belongs to linesentry"
        );
    }
    let wants = root.path("etc/systemd/system/multi-user.target.wants/linesentry.service");
    assert!(
        wants.symlink_metadata().is_ok(),
        "postinst enabled linesentry.service"
    );

    // Upgrade with the same packaged config: the administrator's edit stays, silently.
    let config = root.path("etc/linesentry/agent.toml");
    let edited = fs::read_to_string(&config)
        .unwrap()
        .replace("gw-unconfigured", "gw-hall3-line2");
    fs::write(&config, &edited).unwrap();
    let same_config = repack(&deb, dir.path(), "0.1.1", None);
    root.dpkg(&["--install"], Some(&same_config));
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert!(!root.path("etc/linesentry/agent.toml.dpkg-dist").exists());

    // Upgrade whose packaged config changed too: the edit stays, the new one lands beside it.
    let new_default = format!(
        "{}\n# a new key's documentation\n",
        fs::read_to_string(repo("packaging/agent.toml")).unwrap()
    );
    let new_config = repack(&deb, dir.path(), "0.2.0", Some(&new_default));
    root.dpkg(&["--install"], Some(&new_config));
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(
        fs::read_to_string(root.path("etc/linesentry/agent.toml.dpkg-dist")).unwrap(),
        new_default
    );
    let status = root.dpkg(&["--status", "linesentry"], None);
    assert!(text(&status.stdout).contains("Version: 0.2.0"));

    // Remove keeps the config and the store; purge deletes both.
    fs::write(root.path("var/lib/linesentry/queue.redb"), b"events").unwrap();
    root.dpkg(&["--remove", "linesentry"], None);
    assert!(!bin.exists());
    assert!(config.exists());
    assert!(root.path("var/lib/linesentry/queue.redb").exists());
    root.dpkg(&["--purge", "linesentry"], None);
    assert!(!config.exists());
    assert!(!root.path("var/lib/linesentry").exists());
    assert!(
        wants.symlink_metadata().is_err(),
        "purge removed the enablement"
    );
}
