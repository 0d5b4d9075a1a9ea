# cloudshift in a container: one image for the leader and every worker. Build:
#   docker build -t <registry>/cloudshift:0.1.0 .
# Run (the plan and its secrets come from the environment and a mounted file):
#   docker run --rm -e SOURCE_DATABASE_URL -e TARGET_DATABASE_URL -v $PWD/plans:/plan:ro \
#     <registry>/cloudshift:0.1.0 run /plan/ppm.yaml
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN npm ci --ignore-scripts
COPY src src
COPY migrations migrations
COPY bench bench
RUN npm run build

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /opt/cloudshift
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/dist dist
COPY bin bin
USER node
ENTRYPOINT ["node", "/opt/cloudshift/bin/cloudshift.js"]
CMD ["--help"]
