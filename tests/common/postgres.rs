//! A throwaway PostgreSQL cluster for tests: `initdb` in a temp dir, `pg_ctl start` on a
//! free loopback port (as the `postgres` user when the tests run as root), a fresh
//! database per call of [`Postgres::database`]; stopped and deleted on drop (also when a
//! test panics). [`Postgres::start`] returns None, and the test skips saying why, only
//! when the PostgreSQL binaries are absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian puts the binaries (`/usr/lib/postgresql/<major>/bin`), newest first;
/// `MSE_PG_BIN` overrides.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MSE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((major, bin))
        })
        .filter(|(major, _)| *major >= 15)
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

/// A running cluster; see the module doc.
pub struct Postgres {
    bin: PathBuf,
    /// The temp dir: `data/` (the cluster) and the socket.
    root: PathBuf,
    pub port: u16,
    as_root: bool,
}

impl Postgres {
    /// Starts a cluster, or None (with a message on stderr) when the binaries are absent.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            eprintln!(
                "SKIPPED: no PostgreSQL 15+ binaries under /usr/lib/postgresql/*/bin \
                 (apt-get install postgresql, or set MSE_PG_BIN)"
            );
            return None;
        };
        let root = std::env::temp_dir().join(format!("mse-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("pg temp dir");
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let pg = Postgres {
            bin,
            root,
            port: 0,
            as_root,
        };
        if as_root {
            pg.run(
                "chown",
                &["-R", "postgres:", &pg.root.display().to_string()],
                false,
            );
        }
        let data = pg.data().display().to_string();
        pg.tool(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let mut pg = pg;
        pg.port = free_port();
        pg.start_again();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Starts the stopped cluster on its port (pg_ctl waits until it accepts).
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.display()
        );
        let log = self.root.join("server.log").display().to_string();
        let data = self.data().display().to_string();
        self.tool(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "30", "start",
            ],
        );
    }

    /// Stops the cluster at once (`-m immediate`, like a crash).
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// The URL of the `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn database(&self) -> String {
        let name = format!("mse_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        drop(client);
        let _ = conn.await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Polls `sql` (one bigint) on the database at `url` until `done` holds of it
    /// (bounded); returns the last value.
    pub async fn wait_for(url: &str, sql: &str, done: impl Fn(i64) -> bool) -> i64 {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let row = client.query_one(sql, &[]).await.expect("query");
            let value: i64 = row.get(0);
            if done(value) || std::time::Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Runs a PostgreSQL binary (as `postgres` when we are root); panics with its output
    /// on failure.
    fn tool(&self, name: &str, args: &[&str]) {
        let bin = self.bin.join(name).display().to_string();
        if self.as_root {
            let mut full = vec!["-u", "postgres", "--", bin.as_str()];
            full.extend_from_slice(args);
            self.run("runuser", &full, true);
        } else {
            self.run(&bin, args, true);
        }
    }

    fn run(&self, program: &str, args: &[&str], check: bool) -> Output {
        let out = Command::new(program)
            .args(args)
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if check && !out.status.success() {
            let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let bin = self.bin.join("pg_ctl").display().to_string();
            let data = data.display().to_string();
            let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
            if self.as_root {
                let mut full = vec!["-u", "postgres", "--", bin.as_str()];
                full.extend_from_slice(&args);
                self.run("runuser", &full, false);
            } else {
                self.run(&bin, &args, false);
            }
        }
        remove(&self.root);
    }
}

/// Runs a test body for at most `secs`: a hung test fails (and its cluster is stopped
/// by the unwinding) instead of holding the run.
pub async fn bounded<T>(secs: u64, body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {secs} s"))
}

fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A data dir (boot ids of worker handles) removed with its parent when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        Scratch(super::temp_dir(tag).join("data"))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(parent) = self.0.parent() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "kept for a look: {} (server log: data.log)",
                parent.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}
