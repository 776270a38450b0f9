//! Opening a server connection: TCP or Unix connect, StartupMessage, authentication
//! (SCRAM-SHA-256, md5, cleartext) and the login replies, all under one deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

use super::conn::{BackendKey, CancelAddr, ServerConnection, ServerError, ServerInfo};
use crate::auth::{md5_response, md5_secret, ScramClient, Secret};
use crate::net::Stream;
use crate::protocol::messages::{self, auth_code, tag};

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// What pgfunnel logs in to the server with.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerCredential {
    /// A stored secret (plain password or md5 hash) from the config or auth_file.
    Secret(Secret),
    /// No password known: only trust (or peer) authentication can work.
    None,
}

impl std::fmt::Debug for ServerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerCredential::Secret(_) => "Secret(<redacted>)",
            ServerCredential::None => "None",
        })
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// Host names or addresses; a value starting with `/` is a Unix socket directory.
    pub hosts: Vec<String>,
    /// TCP port (also names the Unix socket file).
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// Role name on the server.
    pub user: String,
    /// Credential for the server login.
    pub credential: ServerCredential,
    /// Startup parameters sent with every new server connection (besides user/database).
    pub startup_params: Vec<(String, String)>,
}

/// Connects and logs in within `timeout` (server_connect_timeout), trying each host in turn.
pub async fn connect(
    target: &ServerTarget,
    timeout: Duration,
) -> Result<ServerConnection, ServerError> {
    match tokio::time::timeout(timeout, connect_inner(target)).await {
        Ok(r) => r,
        Err(_) => Err(ServerError::Timeout),
    }
}

async fn connect_inner(target: &ServerTarget) -> Result<ServerConnection, ServerError> {
    let mut last_err = None;
    for host in &target.hosts {
        match open_socket(host, target.port).await {
            Ok((stream, addr)) => return login(stream, addr, target).await,
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or(ServerError::Protocol("no server host configured")))
}

async fn open_socket(host: &str, port: u16) -> Result<(Stream, CancelAddr), ServerError> {
    if host.starts_with('/') {
        let path = std::path::Path::new(host).join(format!(".s.PGSQL.{port}"));
        let s = UnixStream::connect(&path).await?;
        return Ok((Stream::Unix(s), CancelAddr::Unix(path)));
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok((Stream::Tcp(s), CancelAddr::Tcp(addr)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ServerError::Io(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "host name resolved to no address",
        )
    })))
}

async fn login(
    stream: Stream,
    cancel_addr: CancelAddr,
    target: &ServerTarget,
) -> Result<ServerConnection, ServerError> {
    let now = Instant::now();
    let mut conn = ServerConnection {
        stream,
        buf: BytesMut::with_capacity(8192),
        params: HashMap::new(),
        applied: HashMap::new(),
        key: BackendKey::default(),
        cancel_addr,
        id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
        created: now,
        last_used: now,
        slots: Vec::new(),
        info: Arc::new(ServerInfo {
            id: 0,
            addr: String::new(),
            port: 0,
            local_addr: String::new(),
            local_port: 0,
            connect_time: std::time::SystemTime::now(),
            pid: 0,
            created: now,
        }),
    };
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> = vec![("user", &target.user), ("database", &target.dbname)];
    params.extend(
        target
            .startup_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    messages::put_startup(&mut out, &params);
    conn.stream.write_all(&out).await?;
    authenticate(&mut conn, target).await?;
    loop {
        let (t, body) = conn.read_message().await?;
        match t {
            tag::PARAMETER_STATUS => conn.record_parameter(&body),
            tag::BACKEND_KEY_DATA if body.len() >= 8 => {
                conn.key = BackendKey {
                    pid: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    secret: body[4..].to_vec(),
                };
            }
            tag::READY_FOR_QUERY => {
                conn.info = Arc::new(describe(&conn));
                return Ok(conn);
            }
            tag::ERROR_RESPONSE => {
                return Err(ServerError::Rejected(messages::parse_error_fields(&body)))
            }
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => return Err(ServerError::Protocol("unexpected message during login")),
        }
    }
}

/// The SHOW SERVERS identity of a freshly logged-in connection.
fn describe(conn: &ServerConnection) -> ServerInfo {
    let (addr, port) = match &conn.cancel_addr {
        CancelAddr::Tcp(a) => (a.ip().to_string(), a.port()),
        CancelAddr::Unix(p) => (p.display().to_string(), 0),
    };
    let local = match &conn.stream {
        Stream::Tcp(s) => s.local_addr().ok(),
        _ => None,
    };
    ServerInfo {
        id: conn.id,
        addr,
        port,
        local_addr: local.map(|a| a.ip().to_string()).unwrap_or_default(),
        local_port: local.map(|a| a.port()).unwrap_or(0),
        connect_time: conn.info.connect_time,
        pid: conn.key.pid,
        created: conn.created,
    }
}

/// Runs the authentication exchange up to AuthenticationOk.
async fn authenticate(
    conn: &mut ServerConnection,
    target: &ServerTarget,
) -> Result<(), ServerError> {
    let mut scram: Option<ScramClient> = None;
    loop {
        let (t, body) = conn.read_message().await?;
        if t == tag::ERROR_RESPONSE {
            return Err(ServerError::Rejected(messages::parse_error_fields(&body)));
        }
        if t != tag::AUTHENTICATION || body.len() < 4 {
            return Err(ServerError::Protocol("expected an authentication request"));
        }
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let payload = &body[4..];
        let mut out = BytesMut::new();
        match code {
            auth_code::OK => return Ok(()),
            auth_code::CLEARTEXT => {
                let Some(pw) = plain_password(&target.credential) else {
                    return Err(ServerError::Auth(
                        "server wants a cleartext password but only a hash is known",
                    ));
                };
                let mut p = pw.as_bytes().to_vec();
                p.push(0);
                messages::put_password(&mut out, &p);
            }
            auth_code::MD5 => {
                let salt: [u8; 4] = payload
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(ServerError::Protocol("short md5 salt"))?;
                let ServerCredential::Secret(secret) = &target.credential else {
                    return Err(ServerError::Auth(
                        "server wants a password but none is configured",
                    ));
                };
                let response = match secret {
                    Secret::Plain(pw) => {
                        md5_response(&md5_secret(&target.user, pw.as_bytes()), salt)
                    }
                    Secret::Md5(hash) => md5_response(hash, salt),
                    Secret::Scram(_) => {
                        return Err(ServerError::Auth(
                            "server wants md5 but only a SCRAM secret is known",
                        ))
                    }
                };
                let mut p = response.into_bytes();
                p.push(0);
                messages::put_password(&mut out, &p);
            }
            auth_code::SASL => {
                let offers_scram = payload.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                let Some(pw) = plain_password(&target.credential).filter(|_| offers_scram) else {
                    return Err(ServerError::Auth(
                        "server wants SCRAM but no plain password is known",
                    ));
                };
                let mut client = ScramClient::with_password(pw.as_bytes());
                messages::put_sasl_initial(&mut out, "SCRAM-SHA-256", &client.client_first());
                scram = Some(client);
            }
            auth_code::SASL_CONTINUE => {
                let client = scram
                    .as_mut()
                    .ok_or(ServerError::Protocol("SASL continue without SASL"))?;
                let reply = client
                    .server_first(payload)
                    .map_err(|_| ServerError::Auth("invalid SCRAM server-first-message"))?;
                messages::put_password(&mut out, &reply);
            }
            auth_code::SASL_FINAL => {
                let client = scram
                    .as_mut()
                    .ok_or(ServerError::Protocol("SASL final without SASL"))?;
                client
                    .server_final(payload)
                    .map_err(|_| ServerError::Auth("server SCRAM signature did not verify"))?;
                continue;
            }
            _ => {
                return Err(ServerError::Auth(
                    "server asked for an unsupported authentication method",
                ))
            }
        }
        conn.stream.write_all(&out).await?;
    }
}

fn plain_password(c: &ServerCredential) -> Option<&str> {
    match c {
        ServerCredential::Secret(Secret::Plain(p)) => Some(p),
        _ => None,
    }
}
