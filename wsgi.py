from dotenv import load_dotenv

from operategpt.web.app import create_app

load_dotenv()
app = create_app()
