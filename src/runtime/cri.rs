//! The CRI v1 client (generated from proto/cri/runtime_v1.proto by build.rs) over containerd's
//! unix socket, with the handful of calls the node runtime makes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::RuntimeError;

/// Generated CRI messages and clients.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// Timeout of one CRI call (image pulls get their own).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn err(what: &str, e: tonic::Status) -> RuntimeError {
    RuntimeError::Cri(format!("{what}: {}", e.message()))
}

/// A connected CRI client.
#[derive(Clone, Debug)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub socket: PathBuf,
}

impl Cri {
    /// Connects lazily: the channel reconnects by itself when containerd restarts.
    pub fn connect(socket: &Path) -> Result<Cri, RuntimeError> {
        let path = socket.to_path_buf();
        // The URI is a placeholder: the connector always dials the socket.
        let channel = Endpoint::from_static("http://[::1]:0")
            .timeout(CALL_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            socket: socket.to_path_buf(),
        })
    }

    /// Connects and waits until the runtime answers `Version`.
    pub async fn wait_connect(socket: &Path, within: Duration) -> Result<Cri, RuntimeError> {
        let cri = Cri::connect(socket)?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match cri.version().await {
                Ok(_) => return Ok(cri),
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => {
                    return Err(RuntimeError::NotReady {
                        socket: socket.display().to_string(),
                        waited: within,
                    });
                }
            }
        }
    }

    /// `containerd://<version>` for nodeInfo.containerRuntimeVersion.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let v = self
            .runtime
            .clone()
            .version(v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|e| err("Version", e))?
            .into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }

    pub async fn list_sandboxes(&self) -> Result<Vec<v1::PodSandbox>, RuntimeError> {
        self.list_pod_sandbox(None).await
    }

    /// The sandboxes whose label `key` is `value`.
    pub async fn list_sandboxes_labeled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<v1::PodSandbox>, RuntimeError> {
        self.list_pod_sandbox(Some(v1::PodSandboxFilter {
            label_selector: [(key.to_string(), value.to_string())].into(),
            ..Default::default()
        }))
        .await
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> Result<Vec<v1::PodSandbox>, RuntimeError> {
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(v1::ListPodSandboxRequest { filter })
            .await
            .map_err(|e| err("ListPodSandbox", e))?
            .into_inner()
            .items)
    }

    pub async fn sandbox_status(&self, id: &str) -> Result<v1::PodSandboxStatus, RuntimeError> {
        self.runtime
            .clone()
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(|e| err("PodSandboxStatus", e))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::Cri("PodSandboxStatus: empty answer".into()))
    }

    pub async fn run_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, RuntimeError> {
        Ok(self
            .runtime
            .clone()
            .run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| err("RunPodSandbox", e))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Stops and removes a sandbox (idempotent).
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut rt = self.runtime.clone();
        rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map_err(|e| err("StopPodSandbox", e))?;
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map_err(|e| err("RemovePodSandbox", e))?;
        Ok(())
    }

    pub async fn list_containers(
        &self,
        sandbox: Option<&str>,
    ) -> Result<Vec<v1::Container>, RuntimeError> {
        Ok(self
            .runtime
            .clone()
            .list_containers(v1::ListContainersRequest {
                filter: sandbox.map(|s| v1::ContainerFilter {
                    pod_sandbox_id: s.into(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| err("ListContainers", e))?
            .into_inner()
            .containers)
    }

    pub async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, RuntimeError> {
        self.runtime
            .clone()
            .container_status(v1::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(|e| err("ContainerStatus", e))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::Cri("ContainerStatus: empty answer".into()))
    }

    /// Creates and starts a container; returns its ID.
    pub async fn create_and_start(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut rt = self.runtime.clone();
        let id = rt
            .create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(|e| err("CreateContainer", e))?
            .into_inner()
            .container_id;
        rt.start_container(v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(|e| err("StartContainer", e))?;
        Ok(id)
    }

    /// Stops a container: SIGTERM, then SIGKILL after `timeout` seconds.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        self.runtime
            .clone()
            .stop_container(v1::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map_err(|e| err("StopContainer", e))?;
        Ok(())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.runtime
            .clone()
            .remove_container(v1::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map_err(|e| err("RemoveContainer", e))?;
        Ok(())
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<v1::ExecSyncResponse, RuntimeError> {
        Ok(self
            .runtime
            .clone()
            .exec_sync(v1::ExecSyncRequest {
                container_id: id.into(),
                cmd,
                timeout,
            })
            .await
            .map_err(|e| err("ExecSync", e))?
            .into_inner())
    }

    /// The image's ID when it is present on the node.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .images
            .clone()
            .image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map_err(|e| err("ImageStatus", e))?
            .into_inner()
            .image
            .map(|i| i.id))
    }

    /// Pulls an image; the error carries containerd's message (shown in ErrImagePull).
    pub async fn pull(&self, image: &str) -> Result<String, String> {
        let mut req = tonic::Request::new(v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        });
        req.set_timeout(Duration::from_secs(300));
        self.images
            .clone()
            .pull_image(req)
            .await
            .map(|r| r.into_inner().image_ref)
            .map_err(|e| e.message().to_string())
    }

    pub async fn list_images(&self) -> Result<Vec<v1::Image>, RuntimeError> {
        Ok(self
            .images
            .clone()
            .list_images(v1::ListImagesRequest { filter: None })
            .await
            .map_err(|e| err("ListImages", e))?
            .into_inner()
            .images)
    }
}
