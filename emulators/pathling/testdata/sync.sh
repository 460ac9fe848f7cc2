#!/bin/bash
set -euo pipefail
PATHLING_URL="${PATHLING_URL:-http://localhost:8080/fhir}"
SOURCE_EXPORT_URL="${SOURCE_EXPORT_URL:-https://source-server.example.com/fhir/\$export}"
SAVE_MODE="${SAVE_MODE:-merge}"
TIMEOUT="${TIMEOUT:-7200}"
# Optional: comma-separated list of resource types (e.g., "Patient,Observation")
RESOURCE_TYPES="${RESOURCE_TYPES:-}"
# Optional: ISO timestamp for incremental sync (e.g., "2025-01-01T00:00:00Z")
SINCE="${SINCE:-}"
# Build parameters array
PARAMS="[{\"name\": \"exportUrl\", \"valueUrl\": \"$SOURCE_EXPORT_URL\"}"
PARAMS="$PARAMS,{\"name\": \"saveMode\", \"valueCode\": \"$SAVE_MODE\"}"
# Add resource type filters
if [ -n "$RESOURCE_TYPES" ]; then
IFS=',' read -ra TYPES <<< "$RESOURCE_TYPES"
for TYPE in "${TYPES[@]}"; do
PARAMS="$PARAMS,{\"name\": \"_type\", \"valueString\": \"$TYPE\"}"
done
fi
# Add timestamp filter for incremental sync
if [ -n "$SINCE" ]; then
PARAMS="$PARAMS,{\"name\": \"_since\", \"valueInstant\": \"$SINCE\"}"
fi
PARAMS="$PARAMS]"
REQUEST_BODY="{\"resourceType\": \"Parameters\", \"parameter\": $PARAMS}"
# Kick off the import
echo "Starting import from: $SOURCE_EXPORT_URL"
[ -n "$RESOURCE_TYPES" ] && echo "Resource types: $RESOURCE_TYPES"
[ -n "$SINCE" ] && echo "Since: $SINCE"
STATUS_URL=$(curl -s -D - -X POST "$PATHLING_URL/\$import-pnp" \
-H "Content-Type: application/fhir+json" \
-H "Accept: application/fhir+json" \
-H "Prefer: respond-async" \
-d "$REQUEST_BODY" | grep -i "Content-Location" | cut -d' ' -f2 | tr -d '\r')
if [ -z "$STATUS_URL" ]; then
echo "Failed to start import: no Content-Location header"
exit 1
fi
echo "Polling status: $STATUS_URL"
# Poll until complete
START_TIME=$(date +%s)
INTERVAL=5
while true; do
ELAPSED=$(($(date +%s) - START_TIME))
if [ $ELAPSED -gt $TIMEOUT ]; then
echo "Timeout after ${TIMEOUT}s"
exit 1
fi
HTTP_CODE=$(curl -s -o /dev/null -w "%{http_code}" "$STATUS_URL" \
-H "Accept: application/fhir+json")
if [ "$HTTP_CODE" = "200" ]; then
echo "Import complete"
curl -s "$STATUS_URL" -H "Accept: application/fhir+json"
exit 0
elif [ "$HTTP_CODE" = "202" ]; then
echo "In progress... (${ELAPSED}s elapsed)"
sleep $INTERVAL
# Exponential backoff up to 60s
INTERVAL=$((INTERVAL < 60 ? INTERVAL * 3 / 2 : 60))
else
echo "Error: HTTP $HTTP_CODE"
exit 1
fi
done
