from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self):
        # Import <app>/agents.py of every installed app, this one included (agents.agents holds
        # `ping`), so every agent is registered before a worker takes its first step.
        autodiscover_modules("agents")
