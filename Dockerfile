# Node 26, the Active LTS line (supported until April 2029), on Debian 13 (trixie), Debian's stable release.
# Build stage: compile TypeScript with the dev dependencies.
FROM node:26-trixie-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies and the compiled code only, as the non-root node user.
FROM node:26-trixie-slim
# The heap limits npm start uses too (docs/operations.md: Memory); override NODE_OPTIONS to change it.
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 NODE_OPTIONS="--max-old-space-size=512 --max-semi-space-size=4"
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# OCI labels. VERSION defaults to package.json's version (a test checks it); pass the commit as REVISION and the
# repository's address as SOURCE:
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE=https://… -t wechat-token-cache:0.1.0 .
# Declared after the dependency and build steps, so a new commit does not rebuild those layers.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="wechat-token-cache" \
      org.opencontainers.image.description="A self-hosted, GenAuth-compatible service that fetches, caches and hands out WeChat access tokens." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"
USER node
EXPOSE 8080
# Healthy on HTTP 200 only: /health/ready answers 200 while the service serves, Redis down included ("degraded":
# warm tokens are still answered, and restarting for a shared Redis outage would only drop them), and 503 only while
# it shuts down; a refused connection or no answer within 3 s is unhealthy too. On SIGTERM the service takes up to
# SHUTDOWN_GRACE_MS (10 s) to finish: stop it with more time than Docker's default 10 s, `docker stop -t 15` or
# `docker run --stop-timeout 15`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health/ready').then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))"]
CMD ["node", "dist/server.js"]
