# The compose stack's key service (docker-compose.yml): one node of integrated storage.
# TLS is off inside the compose network only; production requires https (CIRCADIA_USER_KEYS_ADDR).
storage "raft" {
  path    = "/openbao/data"
  node_id = "openbao-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true
}

api_addr     = "http://openbao:8200"
cluster_addr = "http://openbao:8201"
ui           = false
