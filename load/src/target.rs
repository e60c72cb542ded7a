//! What giftload drives: giftstream over the binary protocol or HTTP, or the baseline —
//! one Redis Lua script per event, pipelined, the design most teams build.

use std::sync::Arc;

use futures::future::BoxFuture;
use giftstream::client::{Client, ClientError};
use giftstream::economy::Economy;
use giftstream::engine::Event;

/// The answer to one event, as a stable label: `accepted`, a reject code, or
/// `duplicate` (an id seen before; the original label follows after a colon).
/// Borrowed for the stable labels (no allocation per event), owned where the text comes
/// from the wire (HTTP codes, Lua replies) or names a duplicate.
pub type Label = std::borrow::Cow<'static, str>;

/// Why a request got no per-event answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// A stable kind for the error taxonomy: `unavailable`, `closed`, `timeout`,
    /// `server:<NAME>`, `http:<status>`, `redis`, `protocol`, `io`.
    pub kind: String,
    pub message: String,
}

fn request_error(kind: impl Into<String>, message: impl ToString) -> RequestError {
    RequestError {
        kind: kind.into(),
        message: message.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// giftstream's binary protocol.
    Giftstream,
    /// giftstream's HTTP/JSON API.
    GiftstreamHttp,
    /// One Lua script per event on Redis.
    RedisLua,
}

impl std::str::FromStr for TargetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "giftstream" => Ok(TargetKind::Giftstream),
            "giftstream-http" => Ok(TargetKind::GiftstreamHttp),
            "redis-lua" => Ok(TargetKind::RedisLua),
            _ => Err(format!(
                "unknown target {s:?} (giftstream, giftstream-http, redis-lua)"
            )),
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub kind: TargetKind,
    /// host:port of the binary protocol.
    pub tcp: String,
    /// host:port of the HTTP API (requests for `giftstream-http`; reads and audits).
    pub http: String,
    pub redis: String,
    pub token: String,
    pub read_token: String,
    /// PEM file of the CA (or self-signed certificate) to trust: giftstream over TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    /// A cluster's partition map: the binary protocol goes to every node, each event to
    /// its sender's owner (`tcp` is then unused).
    pub cluster: Option<giftstream::cluster::PartitionMap>,
}

impl TargetSpec {
    /// `https://host:port` with `--tls-ca`, else `http://host:port`.
    pub fn http_base(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http)
    }

    /// An HTTP client that trusts `--tls-ca` (only it) when given.
    pub fn http_client(&self, timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = &self.tls_ca {
            let pem =
                std::fs::read(ca).map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca.display()))?;
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(b.build()?)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            TargetKind::Giftstream => "giftstream",
            TargetKind::GiftstreamHttp => "giftstream-http",
            TargetKind::RedisLua => "redis-lua",
        }
    }

    /// The hosts this run would send to.
    pub fn hosts(&self) -> Vec<String> {
        let host = |a: &str| {
            a.trim_start_matches("redis://")
                .rsplit_once(':')
                .map_or(a.to_owned(), |(h, _)| h.to_owned())
        };
        match self.kind {
            TargetKind::Giftstream if self.cluster.is_some() => {
                let nodes = self.cluster.as_ref().map_or(&[][..], |m| m.nodes());
                let mut hosts: Vec<String> = nodes.iter().map(|n| host(&n.tcp_addr)).collect();
                hosts.push(host(&self.http));
                hosts
            }
            TargetKind::Giftstream => vec![host(&self.tcp), host(&self.http)],
            TargetKind::GiftstreamHttp => vec![host(&self.http)],
            TargetKind::RedisLua => vec![host(&self.redis)],
        }
    }
}

/// A host that is loopback (`127.0.0.0/8`, `::1`, `localhost`).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One connection of a worker.
#[derive(Clone)]
pub enum Conn {
    Tcp(Arc<Client>),
    Http {
        client: reqwest::Client,
        url: String,
        token: String,
    },
    Lua(Arc<Lua>),
    Cluster(Arc<giftstream::client::ClusterClient>),
}

pub type Answers = Result<Vec<Label>, RequestError>;

impl Conn {
    pub async fn connect(spec: &TargetSpec, economy: &Economy) -> anyhow::Result<Conn> {
        Ok(match spec.kind {
            TargetKind::Giftstream if spec.cluster.is_some() => {
                anyhow::ensure!(spec.tls_ca.is_none(), "--cluster does not do TLS yet");
                let map = spec.cluster.clone().expect("checked");
                Conn::Cluster(Arc::new(
                    giftstream::client::ClusterClient::connect(map, &spec.token).await?,
                ))
            }
            TargetKind::Giftstream => Conn::Tcp(Arc::new(match &spec.tls_ca {
                None => Client::connect(spec.tcp.as_str(), &spec.token).await?,
                Some(ca) => {
                    let host = spec
                        .tcp
                        .rsplit_once(':')
                        .map_or(spec.tcp.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let roots = giftstream::client::tls_roots(ca)?;
                    Client::connect_tls(spec.tcp.as_str(), host, roots, &spec.token).await?
                }
            })),
            TargetKind::GiftstreamHttp => Conn::Http {
                client: spec.http_client(std::time::Duration::from_secs(30))?,
                url: format!("{}/v1/events", spec.http_base()),
                token: spec.token.clone(),
            },
            TargetKind::RedisLua => Conn::Lua(Arc::new(Lua::connect(&spec.redis, economy).await?)),
        })
    }

    /// Whether account settings can be sent here (the binary protocol's targets).
    pub fn takes_account_settings(&self) -> bool {
        matches!(self, Conn::Tcp(_) | Conn::Cluster(_))
    }

    /// Sends `events`; the returned future resolves to one label per event. The send
    /// itself happens before this returns for the binary protocol (pipelining); the
    /// others send when the future is first polled.
    pub async fn submit(&self, events: Vec<Event>) -> BoxFuture<'static, Answers> {
        match self {
            Conn::Tcp(client) => match client.submit(&events).await {
                Ok(pending) => Box::pin(async move {
                    pending
                        .outcomes()
                        .await
                        .map(|o| o.iter().map(label).collect())
                        .map_err(client_error)
                }),
                Err(e) => Box::pin(async move { Err(client_error(e)) }),
            },
            Conn::Cluster(client) => match client.submit(&events).await {
                Ok(pending) => Box::pin(async move {
                    pending
                        .outcomes()
                        .await
                        .map(|o| o.iter().map(label).collect())
                        .map_err(client_error)
                }),
                Err(e) => Box::pin(async move { Err(client_error(e)) }),
            },
            Conn::Http { client, url, token } => {
                let (client, url, token) = (client.clone(), url.clone(), token.clone());
                Box::pin(async move { http_send(&client, &url, &token, &events).await })
            }
            Conn::Lua(lua) => {
                let lua = lua.clone();
                Box::pin(async move { lua.send(&events).await })
            }
        }
    }
}

fn label(o: &giftstream::engine::Outcome) -> Label {
    if o.duplicate {
        Label::Owned(format!("duplicate:{}", o.label()))
    } else {
        Label::Borrowed(o.label())
    }
}

fn client_error(e: ClientError) -> RequestError {
    match e {
        ClientError::Server {
            code,
            name,
            message,
        } => {
            let kind = if code == giftstream::protocol::error_code::UNAVAILABLE {
                "unavailable".to_owned()
            } else {
                format!("server:{name}")
            };
            request_error(kind, message)
        }
        ClientError::Closed => request_error("closed", "connection closed"),
        ClientError::Io(e) => request_error("io", e),
        ClientError::Protocol(m) => request_error("protocol", m),
        other => request_error("client", other),
    }
}

/// Puts the embedded economy with a scenario's `[economy]` keys in force on a giftstream
/// target (`PUT /v1/economy`; the same terms again change nothing).
pub async fn put_economy(
    spec: &TargetSpec,
    admin_token: &str,
    keys: &crate::scenario::EconomyOverride,
) -> anyhow::Result<()> {
    let mut file = giftstream::economy::Economy::embedded().to_file();
    file.earnings_hold_ms = keys.earnings_hold_ms;
    if let Some(p) = &keys.promotion {
        let now = giftstream::clock::now().0;
        let at = giftstream::economy::format_time;
        file.promotions.push(giftstream::economy::PromotionFile {
            id: "giftload".to_owned(),
            package: p.package.clone(),
            // Whole seconds: RFC 3339 without a fraction.
            start: at((now / 1000) * 1000 - 60_000),
            end: at((now / 1000 + p.duration_s) * 1000),
            bonus_coins: p.bonus_coins,
            prices: p
                .price_usd
                .iter()
                .map(|v| ("USD".to_owned(), v.clone()))
                .collect(),
            regions: Vec::new(),
            channels: Vec::new(),
        });
    }
    let http = spec.http_client(std::time::Duration::from_secs(30))?;
    let answer = http
        .put(format!("{}/v1/economy", spec.http_base()))
        .bearer_auth(admin_token)
        .json(&file)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("PUT /v1/economy (the scenario's [economy]): {e}"))?;
    let status = answer.status();
    anyhow::ensure!(
        status.is_success(),
        "PUT /v1/economy (the scenario's [economy]): {status}: {}",
        answer.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The JSON form of an event for `POST /v1/events`.
pub fn event_json(e: &Event, economy: &Economy) -> serde_json::Value {
    let id = uuid::Uuid::from_u128(e.id().0).to_string();
    match e {
        Event::Gift(g) => serde_json::json!({"type": "gift", "event_id": id, "sender": g.sender.0,
            "creator": g.creator.0, "stream": g.stream.0,
            "gift": economy.gifts[g.gift.0 as usize].id, "count": g.count}),
        Event::VideoGift(v) => {
            serde_json::json!({"type": "gift", "event_id": id, "sender": v.sender.0,
            "creator": v.creator.0, "video": v.video.0,
            "gift": economy.gifts[v.gift.0 as usize].id, "count": v.count})
        }
        Event::Recharge(r) => {
            let mut v = serde_json::json!({"type": "recharge", "event_id": id, "user": r.user.0,
                "coins": r.coins, "price": r.price.to_string(), "currency": r.currency.as_str(),
                "channel": if r.channel == giftstream::engine::Channel::Web { "web" } else { "app" }});
            if let Some(p) = r.package.get() {
                v["package"] = economy.packages[p.0 as usize].id.clone().into();
            }
            v
        }
        Event::Purchase(p) => serde_json::json!({"type": "purchase", "event_id": id,
            "user": p.user.0, "item": economy.items[p.item.0 as usize].id, "count": p.count}),
        Event::Payout(p) => serde_json::json!({"type": "payout", "event_id": id,
            "creator": p.creator.0, "diamonds": p.diamonds, "currency": p.currency.as_str()}),
        Event::RechargeReversal(r) => serde_json::json!({"type": "recharge_reversal",
            "event_id": id, "user": r.user.0,
            "recharge": uuid::Uuid::from_u128(r.recharge.0).to_string()}),
        Event::GiftReversal(r) => serde_json::json!({"type": "gift_reversal", "event_id": id,
            "sender": r.sender.0, "gift": uuid::Uuid::from_u128(r.gift.0).to_string()}),
        other => {
            unreachable!("giftload sends gifts, recharges, purchases and payouts, not {other:?}")
        }
    }
}

async fn http_send(client: &reqwest::Client, url: &str, token: &str, events: &[Event]) -> Answers {
    let economy = Economy::embedded();
    let body = serde_json::json!({"events": events.iter().map(|e| event_json(e, &economy)).collect::<Vec<_>>()});
    let resp = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| request_error(if e.is_timeout() { "timeout" } else { "io" }, e))?;
    let status = resp.status();
    if status.as_u16() == 503 {
        return Err(request_error("unavailable", "503"));
    }
    if !status.is_success() {
        return Err(request_error(format!("http:{}", status.as_u16()), status));
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| request_error("protocol", e))?;
    let outcomes = v["outcomes"]
        .as_array()
        .ok_or_else(|| request_error("protocol", "no outcomes"))?;
    Ok(outcomes
        .iter()
        .map(|o| {
            let label = if o["status"] == "accepted" {
                Label::Borrowed("accepted")
            } else {
                Label::Owned(o["code"].as_str().unwrap_or("?").to_owned())
            };
            if o["duplicate"] == true {
                Label::Owned(format!("duplicate:{label}"))
            } else {
                label
            }
        })
        .collect())
}

/// The baseline: one `EVALSHA` per event, a batch pipelined in one round trip.
pub struct Lua {
    conn: redis::aio::MultiplexedConnection,
    gift_sha: String,
    recharge_sha: String,
    purchase_sha: String,
    share: (i128, i128),
    costs: Vec<u64>,
    item_costs: Vec<u64>,
}

/// Per gift: idempotency (`SET NX`), balance check, `DECRBY`, creator coins and
/// diamonds, `ZINCRBY` on the creator's and the stream's top gifters, `XADD` to a
/// journal. Returns the balance after, a reject code, or `DUP:<original>`.
pub const GIFT_SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], 'pending', 'NX', 'EX', 86400) then
  return 'DUP:' .. redis.call('GET', KEYS[1])
end
local cost = tonumber(ARGV[2])
local balance = tonumber(redis.call('GET', KEYS[2]) or '0')
if balance < cost then
  redis.call('SET', KEYS[1], 'INSUFFICIENT_COINS', 'EX', 86400)
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 1000000, '*', 'id', ARGV[5], 'result', 'INSUFFICIENT_COINS')
  return 'INSUFFICIENT_COINS'
end
balance = redis.call('DECRBY', KEYS[2], cost)
local coins = redis.call('HINCRBY', KEYS[3], 'coins_received', cost)
local num, den = tonumber(ARGV[3]), tonumber(ARGV[4])
local credited = math.floor(coins * num / den) - math.floor((coins - cost) * num / den)
redis.call('HINCRBY', KEYS[3], 'diamonds', credited)
redis.call('ZINCRBY', KEYS[4], cost, ARGV[1])
redis.call('ZINCRBY', KEYS[5], cost, ARGV[1])
redis.call('SET', KEYS[1], 'accepted', 'EX', 86400)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', 1000000, '*', 'id', ARGV[5], 'result', 'accepted')
return balance
"#;

/// Per recharge: idempotency, `INCRBY`, `XADD`.
pub const RECHARGE_SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], 'accepted', 'NX', 'EX', 86400) then
  return 'DUP:' .. redis.call('GET', KEYS[1])
end
local balance = redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000000, '*', 'id', ARGV[2], 'result', 'accepted')
return balance
"#;

/// Per purchase: idempotency, balance check, `DECRBY`, `XADD` (no creator).
pub const PURCHASE_SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], 'pending', 'NX', 'EX', 86400) then
  return 'DUP:' .. redis.call('GET', KEYS[1])
end
local cost = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[2]) or '0')
if balance < cost then
  redis.call('SET', KEYS[1], 'INSUFFICIENT_COINS', 'EX', 86400)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000000, '*', 'id', ARGV[2], 'result', 'INSUFFICIENT_COINS')
  return 'INSUFFICIENT_COINS'
end
balance = redis.call('DECRBY', KEYS[2], cost)
redis.call('SET', KEYS[1], 'accepted', 'EX', 86400)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000000, '*', 'id', ARGV[2], 'result', 'accepted')
return balance
"#;

const LUA_JOURNAL: &str = "lua:journal";

impl Lua {
    pub async fn connect(url: &str, economy: &Economy) -> anyhow::Result<Lua> {
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(30)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let gift_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(GIFT_SCRIPT)
            .query_async(&mut conn)
            .await?;
        let recharge_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(RECHARGE_SCRIPT)
            .query_async(&mut conn)
            .await?;
        let purchase_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(PURCHASE_SCRIPT)
            .query_async(&mut conn)
            .await?;
        let share = economy.creator_share;
        Ok(Lua {
            conn,
            gift_sha,
            recharge_sha,
            purchase_sha,
            share: (share.mantissa(), 10i128.pow(share.scale())),
            costs: economy.gifts.iter().map(|g| g.coins).collect(),
            item_costs: economy.items.iter().map(|i| i.coins).collect(),
        })
    }

    pub async fn send(&self, events: &[Event]) -> Answers {
        let mut pipe = redis::pipe();
        for e in events {
            let id = format!("{:032x}", e.id().0);
            match e {
                Event::Gift(g) => {
                    let cost = self.costs[g.gift.0 as usize] * u64::from(g.count);
                    pipe.cmd("EVALSHA")
                        .arg(&self.gift_sha)
                        .arg(6)
                        .arg(format!("lua:idem:{id}"))
                        .arg(format!("lua:wallet:{}", g.sender.0))
                        .arg(format!("lua:creator:{}", g.creator.0))
                        .arg(format!("lua:creator:{}:top", g.creator.0))
                        .arg(format!("lua:stream:{}:top", g.stream.0))
                        .arg(LUA_JOURNAL)
                        .arg(g.sender.0)
                        .arg(cost)
                        .arg(self.share.0 as i64)
                        .arg(self.share.1 as i64)
                        .arg(&id);
                }
                // The same script: a video's leaderboard is its own sorted set.
                Event::VideoGift(v) => {
                    let cost = self.costs[v.gift.0 as usize] * u64::from(v.count);
                    pipe.cmd("EVALSHA")
                        .arg(&self.gift_sha)
                        .arg(6)
                        .arg(format!("lua:idem:{id}"))
                        .arg(format!("lua:wallet:{}", v.sender.0))
                        .arg(format!("lua:creator:{}", v.creator.0))
                        .arg(format!("lua:creator:{}:top", v.creator.0))
                        .arg(format!("lua:video:{}:top", v.video.0))
                        .arg(LUA_JOURNAL)
                        .arg(v.sender.0)
                        .arg(cost)
                        .arg(self.share.0 as i64)
                        .arg(self.share.1 as i64)
                        .arg(&id);
                }
                Event::Recharge(r) => {
                    pipe.cmd("EVALSHA")
                        .arg(&self.recharge_sha)
                        .arg(3)
                        .arg(format!("lua:idem:{id}"))
                        .arg(format!("lua:wallet:{}", r.user.0))
                        .arg(LUA_JOURNAL)
                        .arg(r.coins)
                        .arg(&id);
                }
                Event::Purchase(p) => {
                    let cost = self.item_costs[p.item.0 as usize] * u64::from(p.count);
                    pipe.cmd("EVALSHA")
                        .arg(&self.purchase_sha)
                        .arg(3)
                        .arg(format!("lua:idem:{id}"))
                        .arg(format!("lua:wallet:{}", p.user.0))
                        .arg(LUA_JOURNAL)
                        .arg(cost)
                        .arg(&id);
                }
                other => {
                    unreachable!("giftload sends gifts, recharges and purchases, not {other:?}")
                }
            }
        }
        let mut conn = self.conn.clone();
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| request_error("redis", e))?;
        Ok(replies.into_iter().map(lua_label).collect())
    }
}

fn lua_label(v: redis::Value) -> Label {
    match v {
        redis::Value::Int(_) => Label::Borrowed("accepted"),
        redis::Value::BulkString(b) => {
            let s = String::from_utf8_lossy(&b).into_owned();
            Label::Owned(match s.strip_prefix("DUP:") {
                Some(original) => format!("duplicate:{original}"),
                None => s,
            })
        }
        redis::Value::SimpleString(s) => Label::Owned(s),
        other => Label::Owned(format!("?{other:?}")),
    }
}
