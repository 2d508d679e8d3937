# One image for web, worker and Flower (docker-compose.yml picks the command).
FROM node:24-slim AS static
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund && npm run build

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
COPY --from=static /build/static/vendor static/vendor
RUN useradd --create-home app
USER app
EXPOSE 5000 5555
CMD ["python", "serve.py"]
