# The checkout service's infrastructure, as an existing Terraform root module.
# terraform_data needs no provider download, so the demo runs offline.

# The local backend, declared so that the demo can point its workspace_dir at its state dir
# (-backend-config at init, see ../prodline.service.yaml).
terraform {
  backend "local" {}
}

variable "app_version" {
  type = string
}

variable "replicas" {
  type = number
}

resource "terraform_data" "queue" {
  input = "checkout-orders-${terraform.workspace}"
}

resource "terraform_data" "capacity" {
  input = { version = var.app_version, replicas = var.replicas }
}

output "queue_url" {
  value = "amqp://mq.${terraform.workspace}.shop.internal/${terraform_data.queue.output}"
}
