//! `terraform-provider-meshfleet`: started by Terraform, never by hand.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match terraform_provider_meshfleet::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-meshfleet: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
