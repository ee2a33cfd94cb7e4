# One image for every process of the platform; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=config.settings.production \
    PYTHONPATH=/app/platform:/app
WORKDIR /app
COPY . /app
# The admin's CSS and JS are collected into the image (STATIC_ROOT, /app/staticfiles) at build;
# gunicorn serves them through WhiteNoise (config.settings.production). The values here only let
# the production settings load: collectstatic touches no database and no broker.
RUN pip install --no-cache-dir -r requirements.txt \
    && DJANGO_SECRET_KEY=build DJANGO_ALLOWED_HOSTS=build DATABASE_URL=sqlite:////tmp/build.sqlite3 \
       CELERY_BROKER_URL=amqp://build python manage.py collectstatic --noinput \
    && useradd --system platform
USER platform
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
