# The meshfleet provider: a cluster, its agent's bootstrap token, a fleet
# rollout and the data sources. `terraform/` in this repository builds the
# provider; README "Terraform" says how to point terraform at it.

terraform {
  required_providers {
    meshfleet = { source = "meshfleet/meshfleet" }
  }
}

variable "token" {
  type      = string
  sensitive = true
}

provider "meshfleet" {
  endpoint = "http://127.0.0.1:8080" # or MESHFLEET_URL
  token    = var.token               # or MESHFLEET_TOKEN; sensitive
}

resource "meshfleet_cluster" "prod_eu" {
  name   = "prod-eu-1"
  labels = { env = "prod", region = "eu" }
  mesh = {
    upgrade             = { mode = "manual", version = "1.27.1" }
    mtls                = "strict"
    enrolled_namespaces = ["shop"]
    waypoints           = [{ namespace = "shop", name = "shop-waypoint" }]
    maintenance_window  = { slots = [{ day = "saturday", start = "02:00", duration_minutes = 240 }] }
  }
}

resource "meshfleet_bootstrap_token" "prod_eu" {
  cluster = meshfleet_cluster.prod_eu.name
}

resource "meshfleet_rollout" "q4" {
  target_version = "1.28.2"
  selector       = "env=prod"
  stages = [
    { name = "canary", selector = "region=eu", max_concurrency = 1, soak_seconds = 0 },
    { name = "rest", max_concurrency = 10 },
  ]
  failure_policy      = { max_failed_clusters = 1, action = "rollback" }
  wait_for_completion = false

  # A rollout takes the clusters that exist when it starts.
  depends_on = [meshfleet_cluster.prod_eu]
}

data "meshfleet_releases" "all" {}

# Data sources read at plan time; these two wait for the cluster they show.
data "meshfleet_cluster" "prod_eu" {
  name       = "prod-eu-1"
  depends_on = [meshfleet_cluster.prod_eu]
}
data "meshfleet_fleet_summary" "mine" {
  depends_on = [meshfleet_cluster.prod_eu]
}

output "cluster_id" {
  value = meshfleet_cluster.prod_eu.id
}

output "rollout_id" {
  value = meshfleet_rollout.q4.id
}

output "install_command" {
  value     = meshfleet_bootstrap_token.prod_eu.install_command
  sensitive = true
}

output "bootstrap_token" {
  value     = meshfleet_bootstrap_token.prod_eu.token
  sensitive = true
}

output "selectable_versions" {
  value = data.meshfleet_releases.all.versions
}
