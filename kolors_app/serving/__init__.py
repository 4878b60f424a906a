"""The ASGI side: HTTP guard, quotas, logins, library patches and the doctor."""
