//! The server under test and the benchmark's HTTP clients.

use super::*;

pub(super) struct Server {
    pub(super) child: Child,
    pub(super) base: String,
}

/// The `ledger` binary the server runs: `LEDGER_BIN`, else the one built beside this one
/// (`cargo build --release --workspace` builds both).
pub(super) fn ledger_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LEDGER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside = std::env::current_exe()?.with_file_name("ledger");
    if !beside.exists() {
        bail!(
            "no ledger binary at {} (build it: cargo build --release --workspace, or set LEDGER_BIN)",
            beside.display()
        );
    }
    Ok(beside)
}

impl Server {
    pub(super) fn start(url: &str) -> anyhow::Result<Server> {
        let mut child = Command::new(ledger_binary()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .env("LEDGER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LEDGER_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("serve stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines.next().context("serve exited")??;
            if let Some(url) = line.strip_prefix("ledger listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, base })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub(super) struct Http {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
}

impl Http {
    pub(super) async fn login(base: &str) -> anyhow::Result<Http> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let mut http = Http {
            client,
            base: base.to_owned(),
            token: String::new(),
        };
        http.token = http.login_as("admin@ledger.local", ADMIN_PASSWORD).await?;
        Ok(http)
    }

    /// A token of the user `email`.
    pub(super) async fn login_as(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body: Value = self
            .client
            .post(format!("{}/auth/login", self.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await?
            .json()
            .await?;
        Ok(body["accessToken"].as_str().context("login")?.to_owned())
    }

    pub(super) async fn command(&self, name: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}/commands/{name}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{name}: {status} {body}");
        }
        Ok(body)
    }

    pub(super) async fn graphql(
        &self,
        query: &str,
        variables: Value,
        position: Option<i64>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token);
        if let Some(p) = position {
            request = request.header("X-Ledger-Position", p.to_string());
        }
        let body: Value = request
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if !body["errors"].is_null() {
            bail!("graphql: {body}");
        }
        Ok(body)
    }

    pub(super) async fn lag(&self) -> anyhow::Result<i64> {
        let health: Value = self
            .client
            .get(format!("{}/health", self.base))
            .send()
            .await?
            .json()
            .await?;
        Ok(health["projections"].as_array().map_or(i64::MAX, |p| {
            p.iter()
                .map(|x| x["lag"].as_i64().unwrap_or(i64::MAX))
                .max()
                .unwrap_or(0)
        }))
    }

    /// Seconds until every projection has caught up (bounded).
    pub(super) async fn caught_up(&self, limit: Duration) -> anyhow::Result<f64> {
        let start = Instant::now();
        while self.lag().await? > 0 {
            if start.elapsed() > limit {
                bail!("projections did not catch up within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

/// One client's own keep-alive HTTP/1.1 connection, for the closed-loop scenarios (commands,
/// reads), as `wrk` and pgbench keep one connection per client. The connection is driven on
/// the client's own task: no pool to check out from and no connection task to hand each
/// request to and wake for its answer, which made reqwest's client cost 39–47 µs of CPU
/// per query against `wrk`'s 19 on the machine the server shares (BENCHMARKS.md, thirteenth
/// round). After a failed exchange (or the server closing it) the connection is dropped and
/// a new one is opened on the next request.
pub(super) struct Connection {
    pub(super) authority: String,
    pub(super) authorization: HeaderValue,
    pub(super) open: Option<Open>,
}

/// An open connection: where requests go in, and what moves their bytes.
type Open = (http1::SendRequest<Full<Bytes>>, Pin<Box<Driver>>);
type Driver = http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

impl Connection {
    pub(super) fn new(http: &Http) -> anyhow::Result<Connection> {
        let authority = http
            .base
            .strip_prefix("http://")
            .context("the server's address")?
            .to_owned();
        Ok(Connection {
            authority,
            authorization: HeaderValue::from_str(&format!("Bearer {}", http.token))?,
            open: None,
        })
    }

    /// POSTs `body` as JSON to `path`: the answer's status and JSON body.
    pub(super) async fn post(
        &mut self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let request = hyper::Request::post(path)
            .header(header::HOST, &self.authority)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        if self.open.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.authority).await?;
            stream.set_nodelay(true)?;
            let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
            self.open = Some((sender, Box::pin(driver)));
        }
        let Some((sender, driver)) = self.open.as_mut() else {
            bail!("no connection");
        };
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, serde_json::from_slice(&bytes)?))
        };
        // The driver moves the bytes; it ends only when the connection does.
        let answer = tokio::select! {
            answer = exchange => Some(answer),
            _ = driver => None,
        };
        match answer {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(e)) => {
                self.open = None;
                Err(e)
            }
            None => {
                self.open = None;
                bail!("the server closed the connection")
            }
        }
    }

    pub(super) async fn command(&mut self, name: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, answer) = self.post(&format!("/commands/{name}"), body).await?;
        if !status.is_success() {
            bail!("{name}: {status} {answer}");
        }
        Ok(answer)
    }

    pub(super) async fn graphql(&mut self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let (_, answer) = self
            .post(
                "/graphql",
                &json!({ "query": query, "variables": variables }),
            )
            .await?;
        if !answer["errors"].is_null() {
            bail!("graphql: {answer}");
        }
        Ok(answer)
    }
}
