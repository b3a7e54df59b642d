#!/bin/bash
# daily-health-check.sh

NODES=("node1:7702" "node2:7702" "node3:7702")

for node in "${NODES[@]}"; do
  echo "=== Checking $node ==="
  
  # Health endpoint
  if curl -s "http://$node/health" | grep -q "ok"; then
    echo "✓ Health: OK"
  else
    echo "✗ Health: FAILED"
  fi
  
  # Memory usage
  mem=$(curl -s "http://$node/metrics" | grep aegis_cache_size_bytes | awk '{print $2}')
  echo "  Memory: $((mem / 1024 / 1024)) MB"
  
  # Active connections
  conns=$(curl -s "http://$node/metrics" | grep aegis_active_connections | awk '{print $2}')
  echo "  Connections: $conns"
  
  # Cluster members
  members=$(curl -s "http://$node/metrics" | grep aegis_cluster_members | awk '{print $2}')
  echo "  Cluster members: $members"
  
  echo ""
done
