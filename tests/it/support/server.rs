//! A real server on 127.0.0.1:0, in-process, with an in-memory journal.

use std::net::SocketAddr;
use std::sync::Arc;

use giftstream::config::Config;
use giftstream::economy::Economy;
use giftstream::persist::journal::MemoryJournal;
use giftstream::server::ServeError;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const INGEST: &str = "dev-ingest-token-0001";
pub const READ: &str = "dev-read-token-00001";
pub const ADMIN: &str = "dev-admin-token-0001";

pub const SHIPPED_CONFIG: &str = include_str!("../../../config/giftstream.toml");

pub struct TestServer {
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    pub journal: Arc<MemoryJournal>,
    pub engine: Arc<giftstream::engine::Engine>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    pub http_client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let journal = Arc::new(MemoryJournal::default());
        let mut config = Config::from_toml_str(SHIPPED_CONFIG).unwrap();
        adjust(&mut config);
        let engine =
            giftstream::persist::recovery::build_engine(&config, Economy::embedded()).unwrap();
        Self::start_on(config, engine, journal.clone(), journal).await
    }

    /// A server over `journal` with a prepared (recovered) engine.
    pub async fn start_on(
        config: Config,
        engine: Arc<giftstream::engine::Engine>,
        journal: impl Into<giftstream::node::NodeJournal>,
        memory: Arc<MemoryJournal>,
    ) -> TestServer {
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http, tcp) = (
            http_listener.local_addr().unwrap(),
            tcp_listener.local_addr().unwrap(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(giftstream::node::run(
            config,
            engine.clone(),
            journal.into(),
            http_listener,
            tcp_listener,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            http,
            tcp,
            journal: memory,
            engine,
            shutdown: Some(tx),
            task: Some(task),
            http_client: reqwest::Client::new(),
        }
    }

    /// A server over a real Redis journal at `redis_url`, recovered from it, with
    /// snapshots off and a snapshot dir of its own (hermetic: never a `data/` of a manual
    /// run) unless `adjust` says otherwise. Returns what the recovery found.
    pub async fn on_redis(
        redis_url: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> (TestServer, giftstream::persist::recovery::Recovered) {
        Self::on_redis_with(redis_url, Economy::embedded(), adjust).await
    }

    /// As [`TestServer::on_redis`], under `economy`.
    pub async fn on_redis_with(
        redis_url: &str,
        economy: Economy,
        adjust: impl FnOnce(&mut Config),
    ) -> (TestServer, giftstream::persist::recovery::Recovered) {
        let mut config = Config::from_toml_str(SHIPPED_CONFIG).unwrap();
        config.snapshot.interval_ms = 0;
        config.snapshot.events = 0;
        config.snapshot.dir =
            std::env::temp_dir().join(format!("giftstream-test-none-{}", std::process::id()));
        adjust(&mut config);
        let mut journal = giftstream::persist::redis::RedisJournal::connect(redis_url)
            .await
            .unwrap();
        let (engine, recovered) =
            giftstream::persist::recovery::recover(&mut journal, &config, economy)
                .await
                .unwrap();
        let memory = Arc::new(MemoryJournal::default());
        let server = Self::start_on(config, engine, journal, memory).await;
        (server, recovered)
    }

    /// Waits until the server answers HTTP: its start-up (recovery checks, the read
    /// model's `prepare`) is over. The listeners are bound before `run` starts, so a
    /// connection alone does not say that.
    pub async fn serving(&self) {
        let (status, _) = self.get("/healthz", None).await;
        assert_eq!(status, 200);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// GET with a token; returns status and JSON body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        Self::exec(self.http_client.get(self.url(path)), token).await
    }

    /// POST/PUT a raw body with a token; returns status and JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self
            .http_client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body);
        Self::exec(req, token).await
    }

    /// Sends with an optional bearer token; status and JSON body (or the raw text).
    async fn exec(mut req: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_events(&self, events: Value) -> (u16, Value) {
        self.send(
            "POST",
            "/v1/events",
            Some(INGEST),
            serde_json::json!({ "events": events }).to_string(),
        )
        .await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        super::get_text(&self.http_client, &self.url("/metrics")).await
    }

    pub async fn coins(&self, user: u64) -> u64 {
        let (status, body) = self
            .get(&format!("/v1/users/{user}/wallet"), Some(READ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["coins"].as_u64().unwrap()
    }

    /// Shuts down gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A UUID string for test event `n`.
pub fn uuid(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}
