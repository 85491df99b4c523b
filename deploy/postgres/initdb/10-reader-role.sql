-- Read-only login for dashboards (Grafana's PostgreSQL data source).
--
-- Run once by the postgres image's entrypoint (/docker-entrypoint-initdb.d) as POSTGRES_USER (the
-- superuser) in POSTGRES_DB, after 05-owner-role.sql: the tables the warehouse-loader's migrations
-- create later (as the owner role) are covered by the default privileges below. Role names and
-- password come from the environment (CRYPTOFLOW_READER_USER, CRYPTOFLOW_READER_PASSWORD,
-- CRYPTOFLOW_OWNER_USER).
\set ON_ERROR_STOP on
\getenv reader_user CRYPTOFLOW_READER_USER
\getenv reader_password CRYPTOFLOW_READER_PASSWORD
\getenv owner_user CRYPTOFLOW_OWNER_USER

SELECT format('CREATE ROLE %I LOGIN', :'reader_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader_user')
\gexec

ALTER ROLE :"reader_user" WITH LOGIN PASSWORD :'reader_password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
-- Belt and braces: every transaction of this role is read-only, whatever it is granted.
ALTER ROLE :"reader_user" SET default_transaction_read_only = on;
ALTER ROLE :"reader_user" SET statement_timeout = '30s';

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'reader_user')
\gexec
GRANT USAGE ON SCHEMA public TO :"reader_user";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader_user";
-- Tables the loader's migrations create from now on (they run as the owner role).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_user" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader_user";
