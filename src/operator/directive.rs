//! The natural-language directive a Spawn carries for its sub-agent, naming this server's
//! real address (v0.1.0 printed a `<base_url>` placeholder).

use super::frame::Step;

/// Renders the directive for one spawn.
pub fn spawn_directive(base_url: &str, req_id: &str, step: &Step, worker_handle: &str) -> String {
    let authority = base_url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    // Over TLS grpcurl verifies the server instead (with -cacert for a private CA).
    let plaintext = if base_url.starts_with("https://") {
        ""
    } else {
        "-plaintext "
    };
    let Step {
        task_id,
        step_id,
        agent,
        attempt,
    } = step;
    format!(
        "[agent_primitive dispatch=@{agent}]\n\
         Launch a sub-agent for this step. It fetches its prompt and submits its result itself:\n\
         worker endpoint (gRPC, {base_url}):\n\
         \x20 mlua_swarm.v1.WorkerService/GetPrompt  {{\"step_id\": \"{step_id}\"}}\n\
         \x20 mlua_swarm.v1.WorkerService/Submit     {{\"body\": \"<result>\", \"outcome\": \"SUBMIT_OUTCOME_PASS\"}}\n\
         \x20 e.g. grpcurl {plaintext}-H 'authorization: Bearer {worker_handle}' -d '{{\"step_id\":\"{step_id}\"}}' {authority} mlua_swarm.v1.WorkerService/GetPrompt\n\
         worker endpoint (HTTP, v0.1.0 routes):\n\
         \x20 GET  {base_url}/v1/worker/prompt?task_id={step_id}\n\
         \x20 POST {base_url}/v1/worker/submit\n\
         auth: Bearer {worker_handle} (this Spawn's worker_handle; its capability_token works too)\n\
         task_id: {task_id}\n\
         step_id: {step_id}\n\
         agent_id: {agent}\n\
         attempt: {attempt}\n\
         When the sub-agent has submitted, reply spawn_ack {{req_id: \"{req_id}\", ok: true}}."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_names_the_real_address_and_the_handle() {
        let step = Step {
            task_id: "task-1".into(),
            step_id: "ST-1".into(),
            agent: "writer".into(),
            attempt: 1,
        };
        let d = spawn_directive("http://127.0.0.1:7777", "r1", &step, "wh-1234abcd");
        assert!(d.starts_with("[agent_primitive dispatch=@writer]"));
        assert!(d.contains("GET  http://127.0.0.1:7777/v1/worker/prompt?task_id=ST-1"));
        assert!(d.contains("Bearer wh-1234abcd"));
        assert!(d.contains(" 127.0.0.1:7777 mlua_swarm.v1.WorkerService/GetPrompt"));
        assert!(!d.contains("<base_url>"));
        assert!(d.contains("grpcurl -plaintext -H"));
        let tls = spawn_directive("https://127.0.0.1:7777", "r1", &step, "wh-1234abcd");
        assert!(
            tls.contains("grpcurl -H 'authorization: Bearer wh-1234abcd'"),
            "{tls}"
        );
    }
}
