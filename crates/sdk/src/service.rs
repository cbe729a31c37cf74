//! The service client: IoT Hub's REST API with SAS tokens from a shared access
//! policy's connection string.

use crate::SdkError;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use twinhub_core::connection_string::ConnectionString;
use twinhub_core::method::{MethodRequest, MethodResponse};
use twinhub_core::{sas, Identity};

/// The api-version the official SDKs send.
pub const API_VERSION: &str = "2021-04-12";
/// Token lifetime; every request gets a fresh token.
const TOKEN_TTL_SECS: i64 = 3600;

/// One page of query results.
#[derive(Debug, Clone)]
pub struct QueryPage {
    /// The rows.
    pub items: Vec<Value>,
    /// `x-ms-item-type`.
    pub item_type: Option<String>,
    /// `x-ms-continuation`; `None` on the last page.
    pub continuation: Option<String>,
}

/// A client for one hub's service API.
#[derive(Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base: String,
    host: String,
    policy: String,
    key: String,
}

fn encode(id: &str) -> String {
    utf8_percent_encode(id, NON_ALPHANUMERIC).to_string()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ServiceClient {
    /// A client from a service connection string. `ca_pem` adds a trusted CA (a
    /// Twinhub's `ca.pem`); `port` overrides 443.
    pub fn from_connection_string(
        connection_string: &str,
        ca_pem: Option<&[u8]>,
        port: Option<u16>,
    ) -> Result<Self, SdkError> {
        let cs =
            ConnectionString::parse(connection_string).map_err(|e| SdkError::Config(e.message))?;
        let field = |k: &str| {
            cs.require(k)
                .map(str::to_owned)
                .map_err(|e| SdkError::Config(e.message))
        };
        let host = field("HostName")?;
        let policy = field("SharedAccessKeyName")?;
        let key = field("SharedAccessKey")?;
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| SdkError::Config(format!("bad CA certificate: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| SdkError::Config(e.to_string()))?;
        let base = match port {
            Some(p) if p != 443 => format!("https://{host}:{p}"),
            _ => format!("https://{host}"),
        };
        Ok(Self {
            http,
            base,
            host,
            policy,
            key,
        })
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, SdkError> {
        let token = sas::generate_token(
            &self.host,
            &self.key,
            Some(&self.policy),
            now_secs() + TOKEN_TTL_SECS,
        )
        .ok_or_else(|| SdkError::Config("the shared access key is not base64".into()))?;
        let sep = if path.contains('?') { '&' } else { '?' };
        Ok(self
            .http
            .request(
                method,
                format!("{}{path}{sep}api-version={API_VERSION}", self.base),
            )
            .header("Authorization", token))
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, SdkError> {
        let response = request
            .send()
            .await
            .map_err(|e| SdkError::Transport(format!("{e:#}")))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let code = response
            .headers()
            .get("iothub-errorcode")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("Message").and_then(Value::as_str).map(str::to_owned))
            .map(|m| {
                m.split_once(';')
                    .map_or(m.clone(), |(_, rest)| rest.to_owned())
            })
            .unwrap_or(text);
        Err(SdkError::Hub {
            status,
            code,
            message,
        })
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, SdkError> {
        let response = self.send(request).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        response
            .json()
            .await
            .map_err(|e| SdkError::Protocol(e.to_string()))
    }

    fn with_etag(request: RequestBuilder, etag: Option<&str>) -> RequestBuilder {
        match etag {
            Some(e) => request.header("If-Match", format!("\"{}\"", e.trim_matches('"'))),
            None => request,
        }
    }

    /// Creates a device (`body` is a Device JSON; keys left empty are generated).
    pub async fn create_device(&self, device_id: &str, body: &Value) -> Result<Value, SdkError> {
        let rb = self
            .request(Method::PUT, &format!("/devices/{}", encode(device_id)))?
            .json(body);
        self.json(rb).await
    }

    /// Updates a device; `etag` `None` means `"*"`.
    pub async fn update_device(
        &self,
        device_id: &str,
        body: &Value,
        etag: Option<&str>,
    ) -> Result<Value, SdkError> {
        let rb = self
            .request(Method::PUT, &format!("/devices/{}", encode(device_id)))?
            .json(body);
        self.json(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
    }

    /// Reads a device.
    pub async fn get_device(&self, device_id: &str) -> Result<Value, SdkError> {
        self.json(self.request(Method::GET, &format!("/devices/{}", encode(device_id)))?)
            .await
    }

    /// Lists up to `top` devices.
    pub async fn list_devices(&self, top: Option<usize>) -> Result<Value, SdkError> {
        let path = top.map_or_else(|| "/devices".to_owned(), |t| format!("/devices?top={t}"));
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Deletes a device; `etag` `None` means `"*"`.
    pub async fn delete_device(&self, device_id: &str, etag: Option<&str>) -> Result<(), SdkError> {
        let rb = self.request(Method::DELETE, &format!("/devices/{}", encode(device_id)))?;
        self.send(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
            .map(|_| ())
    }

    /// Reads a twin.
    pub async fn get_twin(&self, device_id: &str) -> Result<Value, SdkError> {
        self.json(self.request(Method::GET, &format!("/twins/{}", encode(device_id)))?)
            .await
    }

    /// Merges `patch` (`{"tags":..,"properties":{"desired":..}}`) into a twin.
    pub async fn update_twin(
        &self,
        device_id: &str,
        patch: &Value,
        etag: Option<&str>,
    ) -> Result<Value, SdkError> {
        let rb = self
            .request(Method::PATCH, &format!("/twins/{}", encode(device_id)))?
            .json(patch);
        self.json(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
    }

    /// Replaces a twin's tags and desired properties.
    pub async fn replace_twin(
        &self,
        device_id: &str,
        twin: &Value,
        etag: Option<&str>,
    ) -> Result<Value, SdkError> {
        let rb = self
            .request(Method::PUT, &format!("/twins/{}", encode(device_id)))?
            .json(twin);
        self.json(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
    }

    /// Runs one page of a twin query.
    pub async fn query_page(
        &self,
        query: &str,
        page_size: Option<usize>,
        continuation: Option<&str>,
    ) -> Result<QueryPage, SdkError> {
        let mut rb = self
            .request(Method::POST, "/devices/query")?
            .json(&serde_json::json!({ "query": query }));
        if let Some(n) = page_size {
            rb = rb.header("x-ms-max-item-count", n.to_string());
        }
        if let Some(c) = continuation {
            rb = rb.header("x-ms-continuation", c);
        }
        let response = self.send(rb).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let item_type = header("x-ms-item-type");
        let continuation = header("x-ms-continuation");
        let items = match response
            .json::<Value>()
            .await
            .map_err(|e| SdkError::Protocol(e.to_string()))?
        {
            Value::Array(items) => items,
            other => {
                return Err(SdkError::Protocol(format!(
                    "query result is not an array: {other}"
                )))
            }
        };
        Ok(QueryPage {
            items,
            item_type,
            continuation,
        })
    }

    /// Runs a query to the end (or `top` rows), following continuation tokens.
    pub async fn query_all(&self, query: &str, top: Option<usize>) -> Result<Vec<Value>, SdkError> {
        let mut rows = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let remaining = top.map(|t| t.saturating_sub(rows.len()));
            if remaining == Some(0) {
                break;
            }
            let page_size = remaining.map(|r| r.min(1000));
            let page = self
                .query_page(query, page_size, continuation.as_deref())
                .await?;
            rows.extend(page.items);
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => break,
            }
        }
        if let Some(t) = top {
            rows.truncate(t);
        }
        Ok(rows)
    }
    /// Creates a module of `device_id` (`body` is a Module JSON; keys left empty
    /// are generated).
    pub async fn create_module(
        &self,
        device_id: &str,
        module_id: &str,
        body: &Value,
    ) -> Result<Value, SdkError> {
        let rb = self
            .request(Method::PUT, &module_path(device_id, module_id))?
            .json(body);
        self.json(rb).await
    }

    /// Updates a module; `etag` `None` means `"*"`.
    pub async fn update_module(
        &self,
        device_id: &str,
        module_id: &str,
        body: &Value,
        etag: Option<&str>,
    ) -> Result<Value, SdkError> {
        let rb = self
            .request(Method::PUT, &module_path(device_id, module_id))?
            .json(body);
        self.json(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
    }

    /// Reads a module.
    pub async fn get_module(&self, device_id: &str, module_id: &str) -> Result<Value, SdkError> {
        self.json(self.request(Method::GET, &module_path(device_id, module_id))?)
            .await
    }

    /// Lists a device's modules.
    pub async fn list_modules(&self, device_id: &str) -> Result<Value, SdkError> {
        let path = format!("/devices/{}/modules", encode(device_id));
        self.json(self.request(Method::GET, &path)?).await
    }

    /// Deletes a module; `etag` `None` means `"*"`.
    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        etag: Option<&str>,
    ) -> Result<(), SdkError> {
        let rb = self.request(Method::DELETE, &module_path(device_id, module_id))?;
        self.send(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
            .map(|_| ())
    }

    /// Reads the twin of a device or module.
    pub async fn get_twin_of(&self, target: &Identity) -> Result<Value, SdkError> {
        self.json(self.request(Method::GET, &twin_path(target))?)
            .await
    }

    /// Merges `patch` into the twin of a device or module.
    pub async fn update_twin_of(
        &self,
        target: &Identity,
        patch: &Value,
        etag: Option<&str>,
    ) -> Result<Value, SdkError> {
        let rb = self.request(Method::PATCH, &twin_path(target))?.json(patch);
        self.json(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
    }

    /// Replaces the tags and desired properties of a device's or module's twin.
    pub async fn replace_twin_of(
        &self,
        target: &Identity,
        twin: &Value,
        etag: Option<&str>,
    ) -> Result<Value, SdkError> {
        let rb = self.request(Method::PUT, &twin_path(target))?.json(twin);
        self.json(Self::with_etag(rb, Some(etag.unwrap_or("*"))))
            .await
    }

    /// Invokes a direct method on a device or module and waits for its answer
    /// (the HTTP request lasts as long as both of the request's timeouts).
    pub async fn invoke_method(
        &self,
        target: &Identity,
        request: &MethodRequest,
    ) -> Result<MethodResponse, SdkError> {
        let wait =
            u64::from(request.response_timeout_secs) + u64::from(request.connect_timeout_secs) + 30;
        let rb = self
            .request(Method::POST, &format!("{}/methods", twin_path(target)))?
            .timeout(std::time::Duration::from_secs(wait))
            .json(&request.to_json());
        let body = self.json(rb).await?;
        MethodResponse::from_json(&body).map_err(|e| SdkError::Protocol(e.message))
    }
}

fn module_path(device_id: &str, module_id: &str) -> String {
    format!(
        "/devices/{}/modules/{}",
        encode(device_id),
        encode(module_id)
    )
}

fn twin_path(target: &Identity) -> String {
    match &target.module_id {
        Some(m) => format!("/twins/{}/modules/{}", encode(&target.device_id), encode(m)),
        None => format!("/twins/{}", encode(&target.device_id)),
    }
}
