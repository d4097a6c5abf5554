from prodline.cli.main import entrypoint

entrypoint()
