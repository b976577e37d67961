//! One test host: a network namespace with one address, and the ways the
//! test process reaches into it — a command run there, a Tokio runtime on a
//! thread that joined it, an HTTP GET to a loopback port there, a listener
//! bound there.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::ip;

/// A host of a [`Net`](super::Net). Cheap to clone; the namespace belongs
/// to the `Net`.
#[derive(Clone, Debug)]
pub struct Host {
    name: String,
    ns: String,
    addr: Ipv4Addr,
}

impl Host {
    pub(super) fn new(index: usize, name: &str, ns: &str) -> Host {
        Host {
            name: name.to_owned(),
            ns: ns.to_owned(),
            addr: Ipv4Addr::new(10, 231, 0, index as u8 + 1),
        }
    }

    /// Brings up loopback with the host's address, and moves the `local`
    /// table after the slot where cuts put their rules (preference 10).
    pub(super) fn configure(&self) {
        let addr = format!("{}/32", self.addr);
        self.ip(&["link", "set", "lo", "up"]);
        self.ip(&["addr", "add", &addr, "dev", "lo"]);
        self.ip(&["rule", "add", "pref", "100", "lookup", "local"]);
        self.ip(&["rule", "del", "pref", "0"]);
    }

    /// `ip -n <ns> <args>`, panicking on failure.
    pub(super) fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        ip(&all).unwrap();
    }

    /// This host's end of the link to `peer`.
    pub(super) fn veth_to(&self, peer: &Host) -> String {
        format!("v-{}", peer.name)
    }

    /// Sets the link to `peer` up and (re)creates the route through it (a
    /// device going down loses its routes).
    pub(super) fn link_up_to(&self, peer: &Host) {
        let dev = self.veth_to(peer);
        let (to, src) = (format!("{}/32", peer.addr), self.addr.to_string());
        self.ip(&["link", "set", &dev, "up"]);
        self.ip(&["route", "replace", &to, "dev", &dev, "src", &src]);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's name (`ivl<pid>x<n>-<host>`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address, reachable from every linked host.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// A command that runs `program` in this host (`ip netns exec`, which
    /// execs it: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }

    /// Runs `f` on a new thread that joined this host's namespace: every
    /// socket it opens belongs to the host.
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .expect("thread in the namespace")
        })
    }

    /// Runs the future made by `f` on a current-thread Tokio runtime on a new
    /// thread inside this host; completes with its output.
    pub fn run<F, Fut, T>(&self, f: F) -> impl Future<Output = T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let host = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            host.enter();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = tx.send(runtime.block_on(f()));
        });
        async move { rx.await.expect("the host's runtime panicked") }
    }

    /// Binds `127.0.0.1:<port>` inside this host (0: any free port).
    pub fn listen(&self, port: u16) -> tokio::net::TcpListener {
        let listener = self.in_ns(|| TcpListener::bind(("127.0.0.1", port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(listener).unwrap()
    }

    /// `GET <path>` from `127.0.0.1:<port>` inside this host (HTTP/1.0, so
    /// the body is never chunked): status and body, `None` when nothing
    /// answers within 5 s.
    pub async fn http_get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        let host = self.clone();
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            host.enter();
            let _ = tx.send(get(port, &request));
        });
        rx.await.ok().flatten()
    }

    /// Joins this host's network namespace (this thread only).
    fn enter(&self) {
        let path = format!("/run/netns/{}", self.ns);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid open descriptor of a network namespace; setns
        // changes only the calling thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }
}

fn get(port: u16, request: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
